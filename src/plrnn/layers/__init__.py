"""The paper's layers on plrnn.linear_recurrence: GILR, GILR-LSTM, QRNN and SRU.

All four are torch.nn.Modules in the style of torch.nn.LSTM: time-major (T, B, input_size)
input (batch_first=True for (B, T, input_size)), forward(x, state=None) -> (output, state),
num_layers stacking with optional dropout between layers. Each class's docstring gives its
equations, initialisation, parameter layout and the structure of its state.

A torch.nn.utils.rnn.PackedSequence input gives a PackedSequence output with the same layout and
the state after each sequence's own last step, as torch.nn.LSTM does. It runs padded to the
longest sequence (every step of a sequence is exact: no step reads a later one), so a batch of
very uneven lengths pays for its padding.

The recurrence runs through `plrnn.linear_recurrence(..., backend=model.backend)`: assign
``model.backend`` (or call ``set_backend(model, name)`` for every layer inside a bigger model)
to switch between the serial and parallel kernels; the results agree up to float rounding.

The cuDNN baseline of the paper is torch.nn.LSTM itself. Its equations differ from the paper's
LSTM (h = o * tanh(c) there; the paper writes h = o * c).

compile_gates=True fuses each layer's elementwise gate math with torch.compile (inductor;
compiled once per process per function and dtype). It is off by default: not needed for
correctness, the first call pays 10-60 s of compiling on a 2-core CPU, and on that CPU it bought
little (`python -m plrnn.bench.layer_fusion`; 2 layers, 256 hidden, input 4, T x B = 65,536,
forward+backward, one thread, CPU seconds on a shared 2-core AMD EPYC VM): the gate functions
alone ran 0.96-1.7x faster fused, but the matmuls dominate a layer, which ran 0.94-1.12x
(GILR 1.01-1.12x, GILR-LSTM 1.02-1.06x, QRNN(2) 1.04-1.05x, QRNN(10) 0.94-0.99x, SRU
1.01-1.07x). Measure again where the balance differs (a GPU, small hidden sizes).
"""

from .base import StackedRecurrence, set_backend
from .gilr import GILR
from .gilr_lstm import GILRLSTM
from .qrnn import QRNN
from .sru import SRU

__all__ = ["GILR", "GILRLSTM", "QRNN", "SRU", "StackedRecurrence", "set_backend"]
