"""linear_recurrence's shortcut for the common CPU call (cpu.shortcut): after one call has taken
the full path, calls with the same backend name, shape, dtype and thread count go straight to the
kernel it chose. They must give what the full path gives, and every argument the full path would
refuse must still reach its checks."""

from __future__ import annotations

import pytest
import torch

import plrnn
from plrnn.recurrence import cpu, registry

from .helpers import ref64


@pytest.fixture
def no_shortcuts(monkeypatch):
    monkeypatch.setattr(cpu, "_shortcuts", {})
    return cpu._shortcuts


def _inputs(T, C, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.sigmoid(torch.randn(T, C, generator=g, dtype=torch.float64) + 2).to(dtype)
    x = torch.randn(T, C, generator=g, dtype=torch.float64).to(dtype)
    h0 = torch.randn(C, generator=g, dtype=torch.float64).to(dtype)
    return a, x, h0


@pytest.mark.parametrize("backend", ["auto", "cpu_serial", "cpu_parallel"])
@pytest.mark.parametrize("T, C", [(1, 1), (37, 3), (2049, 5)])
@pytest.mark.parametrize("reverse", [False, True])
def test_a_call_through_the_shortcut_equals_the_full_path(no_shortcuts, backend, T, C, reverse):
    a, x, h0 = _inputs(T, C)
    grads = []
    for attempt in range(2):
        leaves = [t.clone().requires_grad_() for t in (a, x, h0)]
        h = plrnn.linear_recurrence(*leaves, reverse=reverse, backend=backend)
        h.backward(torch.cos(h.detach()))
        grads.append((h.detach(), *(t.grad for t in leaves)))
        if attempt == 0:
            assert len(no_shortcuts) == 1  # the full path recorded the kernel it ran
    for first, second in zip(*grads):
        assert torch.equal(first, second)
    want = ref64(a.double(), x.double(), h0.double(), reverse)
    torch.testing.assert_close(grads[1][0].double(), want, rtol=1e-5, atol=1e-5)


def test_the_shortcut_runs_the_recorded_kernel(no_shortcuts, monkeypatch):
    """A hit skips the full path altogether: the checks and the backend choice do not run."""
    a, x, _ = _inputs(16, 4)
    plrnn.linear_recurrence(a, x)
    key = next(iter(no_shortcuts))
    assert key == ("auto", torch.Size([16, 4]), torch.float32, torch.get_num_threads())

    def refuse(*args, **kwargs):
        raise AssertionError("the full path ran")

    import plrnn.recurrence as recurrence

    monkeypatch.setattr(recurrence, "check_inputs", refuse)
    monkeypatch.setattr(recurrence, "resolve", refuse)
    h = plrnn.linear_recurrence(a, x)
    assert torch.equal(h, torch.ops.plrnn.cpu_scan(a, x, None, False, no_shortcuts[key]))


@pytest.mark.parametrize("call, error", [
    (lambda a, x, h0: plrnn.linear_recurrence(a, x.double()), TypeError),
    (lambda a, x, h0: plrnn.linear_recurrence(a[:, :3], x), ValueError),
    (lambda a, x, h0: plrnn.linear_recurrence(a, x, h0.double()), TypeError),
    (lambda a, x, h0: plrnn.linear_recurrence(a, x, h0[:3]), ValueError),
    (lambda a, x, h0: plrnn.linear_recurrence(a, x, h0.tolist()), TypeError),
    (lambda a, x, h0: plrnn.linear_recurrence(a, x, reverse=1), TypeError),
    (lambda a, x, h0: plrnn.linear_recurrence(a, x, backend=["auto"]), TypeError),
    (lambda a, x, h0: plrnn.linear_recurrence(a, x, backend="no such"), ValueError),
    (lambda a, x, h0: plrnn.linear_recurrence(a, x, return_final_state=1), TypeError),
    (lambda a, x, h0: plrnn.linear_recurrence(a.to("meta"), x), ValueError),
])
def test_arguments_the_full_path_refuses_still_reach_its_checks(no_shortcuts, call, error):
    a, x, h0 = _inputs(16, 4)
    plrnn.linear_recurrence(a, x, h0)
    assert no_shortcuts
    with pytest.raises(error):
        call(a, x, h0)


def test_another_thread_count_takes_the_full_path_and_its_tuning(no_shortcuts, num_threads):
    a, x, _ = _inputs(40, 3)
    num_threads(2)
    plrnn.linear_recurrence(a, x, backend="cpu_parallel")
    assert [key[-1] for key in no_shortcuts] == [2]
    num_threads(1)
    plrnn.linear_recurrence(a, x, backend="cpu_parallel")
    assert cpu._serial_tuned == 1 and cpu._tuned_threads == 1
    assert [key[-1] for key in no_shortcuts] == [1]  # tuning for 1 thread dropped the other
    num_threads(2)
    plrnn.linear_recurrence(a, x, backend="cpu_parallel")
    assert cpu._serial_tuned == 2 and cpu._tuned_threads == 2


def test_auto_for_rows_that_ask_the_cache_size_is_not_recorded(no_shortcuts, monkeypatch):
    """Those read PLRNN_STREAM_BYTES at every call, so their choice can change between calls."""
    T, C = registry.PARALLEL_MIN_STEPS, 33
    assert not registry.choice_is_fixed("auto", T, C)
    assert registry.choice_is_fixed("cpu_serial", T, C)
    assert registry.choice_is_fixed("auto", T, 32) and registry.choice_is_fixed("auto", T - 1, C)
    a, x, _ = _inputs(T, C)
    plrnn.linear_recurrence(a, x)
    assert not no_shortcuts
    plrnn.linear_recurrence(a, x, backend="cpu_serial")
    assert len(no_shortcuts) == 1


@pytest.mark.parametrize("kwargs", [
    {"return_final_state": True}, {"backend": "torch"}, {"cu_seqlens": torch.tensor([0, 5, 16])},
])
def test_other_calls_are_not_recorded(no_shortcuts, kwargs):
    a, x, _ = _inputs(16, 4)
    plrnn.linear_recurrence(a, x, **kwargs)
    assert not no_shortcuts


@pytest.mark.parametrize("backend", ["auto", "cpu_serial", "cpu_parallel"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_out_through_the_shortcut(no_shortcuts, backend, layout):
    a, x, h0 = _inputs(2049, 5)
    want = plrnn.linear_recurrence(a, x, h0, backend=backend)
    assert len(no_shortcuts) == 1
    out = torch.empty_like(x) if layout == "contiguous" else torch.empty(5, 2049).t()
    version = out._version
    assert plrnn.linear_recurrence(a, x, h0, backend=backend, out=out) is out
    assert torch.equal(out, want)
    assert out._version > version  # autograd still refuses a backward through an earlier use


@pytest.mark.parametrize("bad, error", [
    (lambda a, x: x, ValueError),  # shares memory with impulses
    (lambda a, x: a, ValueError),  # shares memory with decays
    (lambda a, x: torch.from_numpy(x.numpy()), ValueError),  # impulses' buffer, its own storage
    (lambda a, x: a[:, :2], ValueError),  # another shape
    (lambda a, x: torch.empty(16, 4, dtype=torch.float64), TypeError),
    (lambda a, x: torch.empty(16, 4, requires_grad=True), RuntimeError),
    (lambda a, x: torch.empty(1, 4).expand(16, 4), ValueError),  # elements share memory
    (lambda a, x: x.tolist(), TypeError),
])
def test_out_the_full_path_refuses_is_refused_by_the_shortcut(no_shortcuts, bad, error):
    a, x, _ = _inputs(16, 4)
    plrnn.linear_recurrence(a, x, out=torch.empty_like(x))
    assert no_shortcuts
    with pytest.raises(error, match="^out must|out= does not support"):
        plrnn.linear_recurrence(a, x, out=bad(a, x))


def test_out_over_a_non_contiguous_input_is_refused_by_the_shortcut(no_shortcuts):
    # The op would see a contiguous copy of such an input, apart from out: the shortcut leaves
    # the call to the full path's check.
    a, x, _ = _inputs(16, 4)
    buffer = a.t().contiguous()
    decays = buffer.t()  # a's values, not contiguous
    plrnn.linear_recurrence(decays, x, out=torch.empty_like(x))
    assert no_shortcuts
    with pytest.raises(ValueError, match="^out must not share memory with decays; "):
        plrnn.linear_recurrence(decays, x, out=buffer.view(16, 4))


def test_broadcast_decays_are_not_recorded_and_miss_a_recorded_shape(no_shortcuts):
    a, x, _ = _inputs(16, 4)
    plrnn.linear_recurrence(a[0], x)
    assert not no_shortcuts
    plrnn.linear_recurrence(a, x)
    want = plrnn.linear_recurrence(a[:1].expand(16, 4).contiguous(), x)
    torch.testing.assert_close(plrnn.linear_recurrence(a[0], x), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("strided", ["decays", "impulses"])
@pytest.mark.parametrize("T", [16, 4096], ids=["small", "1MiB"])
def test_large_strided_inputs_are_not_recorded_and_miss_a_recorded_shape(no_shortcuts, strided,
                                                                         T):
    # From 1 MiB the full path copies strided inputs into recycled buffers (and reads batch-first
    # layouts in place); smaller ones the shortcut copies as that path would.
    a, x, _ = _inputs(T, 64)
    views = {"decays": (a.t().contiguous().t(), x), "impulses": (a, x.t().contiguous().t())}[strided]
    plrnn.linear_recurrence(*views)
    assert bool(no_shortcuts) == (T == 16)
    want = plrnn.linear_recurrence(a, x)
    assert no_shortcuts and cpu.shortcut("auto", a, x, None, False, None) is not None
    assert (cpu.shortcut("auto", *views, None, False, None) is None) == (T == 4096)
    torch.testing.assert_close(plrnn.linear_recurrence(*views), want, rtol=0, atol=0)


def test_the_record_stays_bounded(no_shortcuts, monkeypatch):
    monkeypatch.setattr(cpu, "_SHORTCUTS_MAX", 4)
    for T in range(1, 11):
        a, x, _ = _inputs(T, 2)
        plrnn.linear_recurrence(a, x)
        assert 1 <= len(no_shortcuts) <= 4
