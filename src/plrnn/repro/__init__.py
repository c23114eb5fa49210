"""What every reproduction script shares: Hydra schemas, device choice, atomic result files.

The scripts themselves live in reproductions/ (one per table or figure, run as
`python reproductions/<name>.py [key=value ...]`); this package keeps them short and testable.
"""

from .artifacts import Artifact, results_dir, write_artifact
from .config import ConfigError, DeviceConfig, register_common, resolve_device

__all__ = [
    "Artifact",
    "ConfigError",
    "DeviceConfig",
    "register_common",
    "resolve_device",
    "results_dir",
    "write_artifact",
]
