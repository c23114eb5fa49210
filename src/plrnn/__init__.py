"""plrnn: parallel linear recurrences for PyTorch (Martin & Cundy, ICLR 2018)."""

from .recurrence import BackendStatus, backends, linear_recurrence

__all__ = ["linear_recurrence", "backends", "BackendStatus"]
__version__ = "0.1.0"
