"""Argument checks for linear_recurrence: every message names the argument and what was expected,
and all of them run before any kernel does."""

from __future__ import annotations

import torch

from .varlen import check_cu_seqlens, check_initial_states

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)
DTYPES = FLOAT_DTYPES + COMPLEX_DTYPES
_DTYPE_SET = frozenset(DTYPES)  # a hash lookup, where `in DTYPES` compares up to six times
_FLOAT_SET = frozenset(FLOAT_DTYPES)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


class MixedUnderAutocast(TypeError):
    """Real float inputs of mixed dtypes inside torch.autocast: linear_recurrence runs them in
    `dtype`, the widest, as autocast's "promote" ops (addcmul, cat) do, e.g. a float32 decay
    parameter beside bfloat16 impulses from an autocast Linear. Outside autocast mixed dtypes
    are refused (a plain TypeError): the op never picks a precision silently. Raised from the
    checks' own mismatch branches, so that calls of one dtype pay nothing for it."""

    def __init__(self, message: str, dtype: torch.dtype):
        super().__init__(message)
        self.dtype = dtype


class JaggedInput(TypeError):
    """A jagged nested tensor among the inputs: linear_recurrence runs its packed values
    (jagged.run). Raised from the layout test, so that dense calls pay nothing for it."""


def in_dtype(dtype: torch.dtype, *tensors):
    """The tensors (None kept) in `dtype`: how mixed inputs run under torch.autocast."""
    return tuple(None if t is None else t.to(dtype) for t in tensors)


def autocast_dtype(decays, impulses, initial_state) -> torch.dtype | None:
    """The dtype mixed real float inputs run in under torch.autocast (the widest), or None
    where they are not such inputs (one dtype, autocast off, anything else the checks refuse)."""
    tensors = [t for t in (decays, impulses, initial_state) if t is not None]
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return None  # not checked yet; a promotion would only fail on it
    dtypes = [t.dtype for t in tensors]
    if (not all(d in _FLOAT_SET for d in dtypes) or len(set(dtypes)) == 1
            or not torch.is_autocast_enabled(impulses.device.type)):
        return None
    wide = dtypes[0]
    for dtype in dtypes[1:]:
        wide = torch.promote_types(wide, dtype)
    return wide


def _mixed(message, decays, impulses, initial_state) -> TypeError:
    wide = autocast_dtype(decays, impulses, initial_state)
    return TypeError(message) if wide is None else MixedUnderAutocast(message, wide)


def check_inputs(decays, impulses, initial_state, reverse, cu_seqlens=None) -> list[int] | None:
    """Raises on the first bad argument; returns cu_seqlens's offsets as ints (None without).
    Mixed float dtypes inside torch.autocast raise MixedUnderAutocast, a TypeError naming the
    dtype to run in."""
    for name, value in (("decays", decays), ("impulses", impulses)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of shape (T, *), got {type_name(value)}"
            )
        if value.layout is not torch.strided:
            if value.layout is torch.jagged:
                raise JaggedInput(f"{name} is a jagged nested tensor")
            raise TypeError(f"{name} must be a dense (strided) tensor; got layout {value.layout}")
        if value.dim() == 0 and name == "impulses":
            raise ValueError(
                f"{name} must have a leading time axis, shape (T, *); got a 0-d tensor"
            )
        if value.dtype not in _DTYPE_SET:
            raise TypeError(
                f"{name} must be float16, bfloat16, float32, float64, complex64 or complex128; "
                f"got {value.dtype}"
            )
    try:
        fits = broadcasts_to(decays.shape, impulses.shape)
    except RuntimeError:  # a nested tensor of layout torch.strided has no sizes
        if not (decays.is_nested or impulses.is_nested):
            raise
        raise TypeError(
            "nested tensors of layout torch.strided are not supported: build them with "
            "torch.nested.nested_tensor([...], layout=torch.jagged), (B, j, *) with time ragged, "
            "or pass a packed batch with cu_seqlens"
        ) from None
    if not fits:
        raise ValueError(
            "decays must have the impulses' shape (T, *) or broadcast to it (time-invariant "
            "(*) or (1, *), shared over a dimension with size 1 there); got decays "
            f"{_shape(decays)} and impulses {_shape(impulses)}"
        )
    if decays.dtype is not impulses.dtype:  # torch dtypes are singletons
        if decays.is_complex() != impulses.is_complex():
            raise TypeError(
                "decays and impulses must be both real or both complex (the state takes the "
                f"impulses' dtype); got decays {decays.dtype} and impulses {impulses.dtype}: "
                "cast the real one, e.g. impulses.to(decays.dtype)"
            )
        raise _mixed(
            f"decays and impulses must have the same dtype; got decays {decays.dtype} "
            f"and impulses {impulses.dtype}", decays, impulses, initial_state
        )
    # is_cpu first: building two device objects to compare costs twice as much.
    if not (decays.is_cpu and impulses.is_cpu) and decays.device != impulses.device:
        raise ValueError(
            f"decays and impulses must be on the same device; got decays on {decays.device} "
            f"and impulses on {impulses.device}"
        )
    bounds = None
    if cu_seqlens is not None:
        bounds = check_cu_seqlens(cu_seqlens, impulses.shape[0])
    if initial_state is not None:
        if not isinstance(initial_state, torch.Tensor):
            raise TypeError(
                f"initial_state must be a torch.Tensor or None, got {type_name(initial_state)}"
            )
        if initial_state.layout is not torch.strided:
            raise TypeError(
                f"initial_state must be a dense (strided) tensor; got layout {initial_state.layout}"
            )
        if bounds is not None:
            check_initial_states(initial_state, impulses, len(bounds) - 1)
        elif initial_state.shape != impulses.shape[1:]:
            raise ValueError(
                f"initial_state must have shape {_shape(impulses)[1:]} (impulses.shape[1:]); "
                f"got {_shape(initial_state)}"
            )
        if initial_state.dtype != impulses.dtype:
            raise _mixed(
                f"initial_state must have the impulses' dtype {impulses.dtype}; "
                f"got {initial_state.dtype}", decays, impulses, initial_state
            )
        if initial_state.device != impulses.device:
            raise ValueError(
                f"initial_state must be on the impulses' device {impulses.device}; "
                f"got {initial_state.device}"
            )
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse must be a bool, got {type_name(reverse)}")
    return bounds


def type_name(value) -> str:
    """The type of `value` as a message names it: numpy.bool, not a bare "bool" beside "bool"."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def broadcasts_to(shape, target) -> bool:
    """Whether torch broadcasting takes `shape` to `target` without growing `target`."""
    if shape == target:  # the common case, without the generator below (a microsecond a call)
        return True
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target)))


def _byte_span(t: torch.Tensor) -> tuple[int, int]:
    """[first, last + 1) byte addresses that t's elements can touch (strides are never < 0)."""
    start = t.data_ptr()
    if t.is_contiguous():  # the common case, without a Python loop over dimensions
        return start, start + t.nbytes
    last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    return start, start + (last + 1) * t.element_size()


def _overlaps(span: tuple[int, int], t: torch.Tensor) -> bool:
    # Compared by address span rather than by storage, so two storages over one buffer (from_blob,
    # numpy) count too, and disjoint slices of one buffer do not; interleaved views are refused.
    # The caller has checked that both are on one device, and skips empty tensors.
    start, end = _byte_span(t)
    return start < span[1] and span[0] < end


def check_out(out, decays, impulses, initial_state) -> None:
    """The rules torch's own out= arguments follow, made strict: exactly the impulses' shape,
    dtype and device (no resize, no casting), no memory shared with an input, no autograd."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor or None, got {type_name(out)}")
    if out.layout is not torch.strided:
        raise TypeError(f"out must be a dense (strided) tensor; got layout {out.layout}")
    if out.dtype is not impulses.dtype:
        raise TypeError(f"out must have h's dtype {impulses.dtype} (the impulses', or under "
                        f"autocast the widest of the inputs'); got {out.dtype}")
    if out.shape != impulses.shape:
        raise ValueError(f"out must have the impulses' shape {_shape(impulses)}; got {_shape(out)}")
    if not (out.is_cpu and impulses.is_cpu) and out.device != impulses.device:
        raise ValueError(f"out must be on the impulses' device {impulses.device}; got {out.device}")
    # Spelled out rather than any() over the inputs: a generator costs a microsecond a call.
    if torch.is_grad_enabled() and (
        out.requires_grad or decays.requires_grad or impulses.requires_grad
        or (initial_state is not None and initial_state.requires_grad)
    ):
        raise RuntimeError(
            "linear_recurrence(): out= does not support automatic differentiation, but one of "
            "the arguments requires grad; call it under torch.no_grad() or without out="
        )
    # Under torch.compile the tensors are fakes, without addresses: what follows is checked in
    # eager mode only.
    if torch.compiler.is_compiling():
        return
    if out.is_conj() or out.is_neg():  # a lazy view, which the C++ op cannot write through
        raise ValueError(
            "out must not be a conjugate or negated view (conj(), .imag of one); pass the tensor "
            "it views, or one from resolve_conj() / resolve_neg()"
        )
    # A contiguous tensor cannot overlap itself; 1: certainly overlapping (2: unknown).
    if not out.is_contiguous() and torch._debug_has_internal_overlap(out) == 1:
        raise ValueError(
            "out must not have elements that share memory (as expand() makes); "
            "pass a contiguous tensor"
        )
    if out.numel() == 0 or out.is_meta:
        return
    span = _byte_span(out)  # check_inputs put every input on out's device
    for name, t in (("decays", decays), ("impulses", impulses), ("initial_state", initial_state)):
        if t is not None and t.numel() and _overlaps(span, t):
            raise ValueError(f"out must not share memory with {name}; pass a separate tensor")
