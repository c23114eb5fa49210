"""Context parallelism: the linear recurrence, and the layers built on it, over a sequence whose
time axis is split across processes with torch.distributed (gloo on CPU, nccl on CUDA).

    import torch.distributed as dist, plrnn.distributed as pd
    dist.init_process_group("gloo")                   # under torchrun --nproc-per-node=N
    h = pd.linear_recurrence(a_shard, x_shard)        # this rank's slice of the whole scan
    model = pd.shard_sequence(plrnn.GILRLSTM(...))    # layers over sharded time
"""

from .group import CommStats, ShardMismatchError, comm_stats
from .layers import ShardedTime, shard_sequence, sync_gradients, unshard_sequence
from .scan import linear_recurrence

__all__ = [
    "linear_recurrence",
    "shard_sequence",
    "unshard_sequence",
    "sync_gradients",
    "ShardedTime",
    "comm_stats",
    "CommStats",
    "ShardMismatchError",
]
