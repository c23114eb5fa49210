"""asv: the paper's layers (GILR, GILR-LSTM, QRNN(2), QRNN(10), SRU) with their serial and their
parallel recurrence, and torch.nn.LSTM (cuDNN on a GPU) at the same size, from the grid
(Table 2's setting: 2 layers, 256 hidden, input size 4). The forward pass runs without autograd;
forward+backward takes the gradients of every parameter.
"""

from ._support import (
    GRID,
    AsvDefaults,
    cuda_only_params,
    grid,
    layer_case,
    lstm_case,
    require_cuda_grid,
)


class Layers(AsvDefaults):
    params = GRID.layers.params()
    param_names = list(grid.LAYER_PARAM_NAMES)

    def setup(self, layer, recurrence, seq_len, batch, pass_):
        self.prepare(layer_case, layer, recurrence, seq_len, batch, pass_)

    def time_layer(self, layer, recurrence, seq_len, batch, pass_):
        self.case.run()


class LSTM(AsvDefaults):
    params = GRID.layers.lstm_params()
    param_names = list(grid.LSTM_PARAM_NAMES)

    def setup(self, seq_len, batch, pass_):
        self.prepare(lstm_case, seq_len, batch, pass_)

    def time_lstm(self, seq_len, batch, pass_):
        self.case.run()


class LayersCUDA(AsvDefaults):
    params = cuda_only_params(GRID.layers.params())
    param_names = list(grid.LAYER_PARAM_NAMES)

    def setup(self, layer, recurrence, seq_len, batch, pass_):
        require_cuda_grid()
        self.prepare(layer_case, layer, recurrence, seq_len, batch, pass_)

    def track_cuda_event_time(self, layer, recurrence, seq_len, batch, pass_):
        return self.case.cuda_event_seconds()

    track_cuda_event_time.unit = "seconds"

    def track_cuda_peak_memory(self, layer, recurrence, seq_len, batch, pass_):
        return self.case.cuda_peak_bytes()

    track_cuda_peak_memory.unit = "bytes"
