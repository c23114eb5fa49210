"""asv: one optimiser step of the synthetic long-dependency task (plrnn.tasks.train_step), for
the two-layer GILR-LSTM and torch.nn.LSTM (the paper's Table 3 models), from the grid."""

from ._support import GRID, AsvDefaults, grid, train_case


class TrainStep(AsvDefaults):
    params = GRID.train.params()
    param_names = list(grid.TRAIN_PARAM_NAMES)

    def setup(self, model, seq_len, batch):
        self.prepare(train_case, model, seq_len, batch)

    def time_train_step(self, model, seq_len, batch):
        self.case.run()
