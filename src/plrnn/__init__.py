"""plrnn: parallel linear recurrences for PyTorch (Martin & Cundy, ICLR 2018)."""

from .layers import GILR, GILRLSTM, QRNN, SRU, set_backend
from .recurrence import BackendStatus, backends, empty_cache, linear_recurrence

__all__ = [
    "linear_recurrence",
    "backends",
    "BackendStatus",
    "empty_cache",
    "GILR",
    "GILRLSTM",
    "QRNN",
    "SRU",
    "set_backend",
]
__version__ = "0.1.0"
