"""h[t] = a[t] * h[t-1] + x[t] over a sequence whose time axis is split across processes.

Algorithm 1 of the paper, with processes in place of GPU threads. In the recurrence's own order
(positions p = 0..P-1; the last rank comes first when reverse=True):

forward   every rank reduces its shard to (prod of its decays P_p, state R_p reached from zero;
          from h0 on the first rank), one all_gather exchanges these 2C numbers, each rank folds
          its predecessors' totals into its carry-in, c = P_q * c + R_q, and runs the local
          kernel from it.
backward  the same in reverse time. The adjoint g of the whole sequence satisfies, inside a
          shard, the local backward with one extra term on its last step: the gradient reaching
          the next shard's carry-in. That term is D_q + P_q * (the term after shard q), where
          D_q is dL/dcarry_in of shard q with nothing arriving from beyond it; one all_gather of
          the D_q gives every rank its term, then the local backward runs once. dL/da at a
          shard's first step reads h at the previous shard's last step, the carry-in.

Each pass exchanges O(C) numbers per rank, never O(T C). The reductions stream the shard in
chunks, so they need O(C) memory beyond the inputs.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.autograd.function import once_differentiable

from ..recurrence import linear_recurrence as local_recurrence
from ..recurrence import transforms
from ..recurrence.registry import resolve
from ..recurrence.validation import JaggedInput, MixedUnderAutocast, check_inputs, in_dtype
from .group import Place, agree, gather_tensors, locate, wants_grad

CHUNK_ELEMENTS = 1 << 20  # elements per chunk of the streaming reductions


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunks(T: int, channels: int, reverse: bool) -> list[tuple[int, int]]:
    """Row ranges of the streaming reductions, in the recurrence's order."""
    rows = max(1, CHUNK_ELEMENTS // max(1, channels))
    spans = [(s, min(s + rows, T)) for s in range(0, T, rows)]
    return spans[::-1] if reverse else spans


def shard_totals(decays, impulses, h0, reverse: bool, backend: str):
    """(P, R) of one shard: the product of its decays and the state it reaches from h0 (zeros
    if None), in the accumulation dtype."""
    acc = _acc(decays.dtype)
    channels = math.prod(decays.shape[1:])
    P = decays.new_ones(decays.shape[1:], dtype=acc)
    R = decays.new_zeros(decays.shape[1:], dtype=acc) if h0 is None else h0.to(acc)
    with torch.no_grad():
        for s, e in _chunks(decays.shape[0], channels, reverse):
            # Each chunk in the accumulation dtype, as the kernels run float16/bfloat16: a state
            # handed between chunks in the inputs' dtype would be rounded once per chunk.
            h = local_recurrence(
                decays[s:e].to(acc), impulses[s:e].to(acc), R, reverse=reverse, backend=backend
            )
            R = h[0] if reverse else h[-1]
            P *= decays[s:e].prod(0, dtype=acc)
    return P, R


def adjoint_total(decays, grad_h, reverse: bool):
    """D = dL/d(carry-in) of one shard from its own grad_h alone: sum over steps i (recurrence
    order) of (a[0] * ... * a[i]) * grad_h[i], streamed in chunks."""
    acc = _acc(decays.dtype)
    channels = math.prod(decays.shape[1:])
    D = decays.new_zeros(decays.shape[1:], dtype=acc)
    run = decays.new_ones(decays.shape[1:], dtype=acc)
    for s, e in _chunks(decays.shape[0], channels, reverse):
        a, g = decays[s:e].to(acc), grad_h[s:e].to(acc)
        if reverse:
            a, g = a.flip(0), g.flip(0)
        prods = torch.cumprod(a, 0).mul_(run)
        D += (prods * g).sum(0)
        run = prods[-1]
    return D


def _fold(totals: list[torch.Tensor], start: torch.Tensor) -> torch.Tensor:
    """Carries `start` through shards given as stacked (P, R) pairs, in order."""
    c = start
    for t in totals:
        c = t[0] * c + t[1]
    return c


class _ShardedScan(torch.autograd.Function):
    """`anchor`: a leaf that requires grad, passed by a rank whose own inputs need no gradient
    while another rank's do, so that this rank's loss still enters the backward's collective."""

    @staticmethod
    def forward(ctx, decays, impulses, h0, anchor, place: Place, backend: str, want_final: bool):
        acc, dtype = _acc(decays.dtype), decays.dtype
        zeros = decays.new_zeros(decays.shape[1:], dtype=acc)
        if place.last and not want_final:
            P, R = zeros + 1, zeros  # nobody reads the last shard's totals
        else:
            P, R = shard_totals(
                decays, impulses, h0 if place.first else None, place.reverse, backend
            )
        totals = place.in_recurrence_order(gather_tensors("forward", torch.stack([P, R]), place))
        carry = h0 if place.first else _fold(totals[: place.pos], zeros).to(dtype)
        final = _fold(totals, zeros).to(dtype) if want_final else zeros.new_empty(0)

        grads = ctx.needs_input_grad[:3]
        ctx.inner = None
        if any(grads):
            with torch.enable_grad():
                a = decays.detach().requires_grad_(grads[0])
                x = impulses.detach().requires_grad_(grads[1])
                c = (
                    None
                    if carry is None
                    else carry.detach().requires_grad_(place.first and grads[2])
                )
                h = local_recurrence(a, x, c, reverse=place.reverse, backend=backend)
            ctx.inner = (h, a, x, c)
        else:
            h = local_recurrence(decays, impulses, carry, reverse=place.reverse, backend=backend)
        if any(ctx.needs_input_grad[:4]):
            ctx.decays = decays.detach()
            ctx.P = [t[0] for t in totals]
        ctx.place, ctx.want_final = place, want_final
        if not want_final:
            ctx.mark_non_differentiable(final)
        return h.detach(), final

    @staticmethod
    @once_differentiable  # a second backward raises, as through plrnn.linear_recurrence
    def backward(ctx, grad_h, grad_final):
        place = ctx.place
        h, a, x, c = ctx.inner or (None, None, None, None)
        decays = ctx.decays
        acc = _acc(decays.dtype)
        zeros = decays.new_zeros(decays.shape[1:], dtype=acc)
        D = zeros if place.first else adjoint_total(decays, grad_h, place.reverse)
        G = grad_final.to(acc) if ctx.want_final else zeros
        parts = place.in_recurrence_order(gather_tensors("backward", torch.stack([D, G]), place))
        beyond = sum(p[1] for p in parts)  # the final state's gradient, from every rank's loss
        for q in range(place.world - 1, place.pos, -1):
            beyond = parts[q][0] + ctx.P[q] * beyond

        T = decays.shape[0]
        wanted = [t for t in (a, x, c) if t is not None and t.requires_grad]
        if not wanted:  # only the anchor: this rank's part was its D in the all_gather
            got = {}
        elif T == 0:  # an empty shard passes the gradient through to its carry-in
            got = {id(t): torch.zeros_like(t) for t in wanted}
            if c is not None and c.requires_grad:
                got[id(c)] = beyond.to(c.dtype)
        else:
            if place.pos < place.world - 1 or ctx.want_final:
                grad_h = grad_h.clone()
                row = 0 if place.reverse else T - 1
                grad_h[row] += beyond.to(grad_h.dtype)
            # The inner graph stays (retain_graph) for a second backward through the outer one
            # (retain_graph=True there); what it holds (the local op's decays, h and carry-in)
            # lives as long as the outer graph's output anyway.
            got = dict(
                zip(map(id, wanted), torch.autograd.grad(h, wanted, grad_h, retain_graph=True))
            )
        out = [got.get(id(t)) if t is not None else None for t in (a, x, c)]
        return out[0], out[1], out[2], None, None, None, None


def _describe(decays, impulses, initial_state, reverse, want_final) -> dict:
    tensors = [t for t in (decays, impulses, initial_state) if isinstance(t, torch.Tensor)]
    ok = isinstance(decays, torch.Tensor) and decays.dim() > 0
    return {
        "T": decays.shape[0] if ok else None,
        "channels": tuple(decays.shape[1:]) if ok else None,
        "dtype": str(decays.dtype) if ok else None,
        # Under autocast on every rank the dtypes may differ (rank 0 alone holds the initial
        # state): every rank then runs in the widest of them.
        "autocast": ok and decays.is_floating_point()
        and torch.is_autocast_enabled(decays.device.type),
        "run_dtype": decays.dtype if ok else None,
        "device_type": decays.device.type if ok else None,
        "reverse": reverse,
        "grad_enabled": torch.is_grad_enabled(),
        "wants_grad": torch.is_grad_enabled() and any(t.requires_grad for t in tensors),
        "final": want_final,
    }


# Under torch.compile the exchanges run eagerly (a graph break): dynamo cannot trace a process
# group or all_gather_object.
@torch.compiler.disable
def linear_recurrence(
    decays: torch.Tensor,
    impulses: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    group=None,
    backend: str = "auto",
    return_final_state: bool = False,
):
    """`plrnn.linear_recurrence` over a sequence split in time across the ranks of `group`.

    Each rank passes its contiguous shard `(T_r, *)` (lengths may differ, T_r >= 0), ranks in
    time order within the group; every rank gets its slice of the single-process result, with
    gradients to its decays, impulses and (on the first rank) initial state that equal the
    single-process gradients.

    Args:
        decays, impulses: this rank's shard, `(T_r, *)`; the trailing shape, dtype and device type
            must be the same on every rank. Under torch.autocast on every rank real float dtypes
            may differ, within a rank or between ranks: all of them run in the widest.
        initial_state: `(*)`, only on the rank where the recurrence starts (group rank 0, or the
            last rank with reverse=True); None on the others.
        reverse: run from the last step of the last rank down to the first of rank 0.
        group: a torch.distributed process group (default: the world).
        backend: the local kernel, as in `plrnn.linear_recurrence`.
        return_final_state: also return the state after the whole sequence, `(*)`, the same on
            every rank. Its gradient is the sum of what every rank's loss sends it.

    Returns:
        h `(T_r, *)`, or `(h, final_state)` with return_final_state=True.

    Every rank must call this (and later the backward) together, as with any collective. Each
    call runs one metadata check (all_gather_object) and one all_gather of 2C numbers in the
    forward, one of 2C in the backward; `plrnn.distributed.comm_stats()` counts them. Errors in
    any rank's arguments are raised on every rank before any kernel runs.
    """
    place = locate(group, reverse)
    error = None
    try:
        try:
            check_inputs(decays, impulses, initial_state, reverse)
        except MixedUnderAutocast as mixed:  # as plrnn.linear_recurrence: run in the widest
            decays, impulses, initial_state = in_dtype(mixed.dtype, decays, impulses, initial_state)
            check_inputs(decays, impulses, initial_state, reverse)
        except JaggedInput:  # plrnn.linear_recurrence's signal to take its jagged path
            raise TypeError("plrnn.distributed.linear_recurrence takes dense (T_r, *) shards, "
                            "not jagged nested tensors") from None
        if decays.shape != impulses.shape:
            raise ValueError("plrnn.distributed.linear_recurrence needs decays of the impulses' "
                             f"shape {tuple(impulses.shape)}; got {tuple(decays.shape)} (expand "
                             "them first)")
        if impulses.is_complex():
            raise TypeError("plrnn.distributed.linear_recurrence takes real inputs; complex "
                            f"ones ({impulses.dtype}) run in plrnn.linear_recurrence only")
        T, channels = decays.shape[0], math.prod(decays.shape[1:])
        resolve(backend, impulses.device, max(T, 1), channels)  # an unknown backend fails here
        if initial_state is not None and not place.first:
            start = "the last rank" if reverse else "rank 0"
            raise ValueError(
                f"initial_state belongs to the rank where the recurrence starts ({start} of the "
                f"group); rank {place.rank} must pass None"
            )
        if place.world > 1 and transforms.active():
            # Refused here, before the exchange, so that a rank under a transform fails with
            # the others instead of leaving them in the forward's all_gather.
            raise RuntimeError(
                "plrnn.distributed.linear_recurrence takes torch.autograd only across "
                "processes, not torch.func's transforms or forward-mode AD; with one process "
                "plrnn.linear_recurrence takes them"
            )
    except (TypeError, ValueError, RuntimeError) as e:
        error = e
    if place.world == 1:
        if error is not None:
            raise error
        return local_recurrence(decays, impulses, initial_state, reverse=reverse,
                                backend=backend, return_final_state=bool(return_final_state))
    described = _describe(decays, impulses, initial_state, reverse, return_final_state)
    everyone = agree(described, error, place)
    if all(d["autocast"] for d in everyone):
        wide = functools.reduce(torch.promote_types, [d["run_dtype"] for d in everyone])
        decays, impulses, initial_state = in_dtype(wide, decays, impulses, initial_state)
    anchor = None
    if wants_grad(everyone) and not described["wants_grad"]:
        anchor = decays.new_zeros((), requires_grad=True)
    h, final = _ShardedScan.apply(
        decays, impulses, initial_state, anchor, place, backend, bool(return_final_state)
    )
    return (h, final) if return_final_state else h
