"""train_step against an independent float64 computation, and run(): caps, logging, seeding."""

from __future__ import annotations

import copy
import csv
import dataclasses
import math

import pytest
import torch

import plrnn.tasks.train as train_mod
from plrnn.tasks import (
    LOG_COLUMNS,
    ModelConfig,
    RunConfig,
    StepOutput,
    SyntheticBatches,
    TrainConfig,
    make_model,
    run,
    train_step,
)


def tiny(kind="lstm", *, log_path=None, seed=0, **train):
    train = {"lr": 1e-2, "max_steps": 25, "log_every": 10, **train}
    return RunConfig(seq_len=8, batch_size=4, seed=seed, device="cpu",
                     model=ModelConfig(kind, hidden=8), train=TrainConfig(**train),
                     log_path=None if log_path is None else str(log_path))


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def float64_loss_and_grads(model, x, labels):
    """Cross-entropy and gradient by hand in float64 on a copy: softmax written out."""
    ref = copy.deepcopy(model).double()
    logits = ref(x.double())
    logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    loss = -logp[torch.arange(len(labels)), labels].mean()
    loss.backward()
    grads = [p.grad.clone() for p in ref.parameters()]
    correct = (logits.argmax(1) == labels).double().mean()
    return loss.item(), grads, correct.item()


def test_step_loss_accuracy_and_grad_norm_match_float64():
    model = make_model("lstm", 8, seed=0)
    batch = next(SyntheticBatches(10, 6, seed=2))
    x = batch.dense(torch.float32)
    loss, grads, acc = float64_loss_and_grads(model, x, batch.labels)
    norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
    out = train_step(model, batch, torch.optim.SGD(model.parameters(), lr=0.0), clip=None)
    assert isinstance(out, StepOutput)
    assert out.loss.item() == pytest.approx(loss, rel=1e-5)
    assert out.accuracy.item() == acc
    assert out.grad_norm.item() == pytest.approx(norm, rel=1e-5)


def test_clipping_bounds_the_global_norm_of_the_update():
    model = make_model("lstm", 8, seed=0)
    batch = next(SyntheticBatches(10, 6, seed=2))
    _, grads, _ = float64_loss_and_grads(model, batch.dense(), batch.labels)
    norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
    clip = norm / 4
    before = [p.detach().double().clone() for p in model.parameters()]
    # SGD with lr 1: the update is exactly the (clipped) gradient.
    train_step(model, batch, torch.optim.SGD(model.parameters(), lr=1.0), clip=clip)
    deltas = [b - p.detach().double() for b, p in zip(before, model.parameters())]
    step_norm = math.sqrt(sum(float((d**2).sum()) for d in deltas))
    assert step_norm == pytest.approx(clip, rel=1e-4)
    for d, g in zip(deltas, grads):  # same direction as the unclipped gradient
        torch.testing.assert_close(d, g * (clip / norm), rtol=1e-3, atol=1e-6)


def test_dense_tuple_batch_is_the_same_step():
    batch = next(SyntheticBatches(10, 4, seed=2))
    results = []
    for b in (batch, (batch.dense(), batch.labels)):
        model = make_model("lstm", 8, seed=0)
        out = train_step(model, b, torch.optim.Adam(model.parameters(), lr=1e-3), clip=20.0)
        results.append((out.loss.item(), [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_bad_clip_names_itself():
    model = make_model("lstm", 4)
    with pytest.raises(ValueError, match="clip"):
        train_step(model, next(SyntheticBatches(4, 2)), torch.optim.Adam(model.parameters()), 0.0)


def test_tiny_run_writes_the_log(tmp_path):
    path = tmp_path / "sub" / "run.csv"
    result = run(tiny(log_path=path, window=1000))
    assert not result.converged and result.stop_reason == "max_steps"
    assert result.iterations == 25 and result.log_path == str(path)
    rows = read_log(path)
    with open(path) as f:
        assert f.readline().strip().split(",") == list(LOG_COLUMNS)
    assert [int(r["step"]) for r in rows] == [10, 20, 25]  # every 10 steps, and the last one
    times = [float(r["wall_time_s"]) for r in rows]
    assert times == sorted(times) and times[0] > 0
    assert times[-1] == pytest.approx(result.wall_time_s, abs=0.05)
    for r in rows:
        assert (r["model"], r["T"], r["batch_size"], r["hidden"], r["seed"]) == ("lstm", "8", "4", "8", "0")
        assert float(r["accuracy"]) in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert math.isfinite(float(r["loss"])) and float(r["grad_norm"]) >= 0
    assert float(rows[-1]["accuracy"]) == result.final_accuracy
    assert float(rows[-1]["loss"]) == pytest.approx(result.final_loss, rel=1e-6)


def test_same_seed_same_run_and_warmup_changes_nothing(tmp_path):
    def losses(name, **kw):
        run(tiny(log_path=tmp_path / name, window=1000, max_steps=10, log_every=5, **kw))
        return [(r["accuracy"], r["loss"]) for r in read_log(tmp_path / name)]

    a = losses("a.csv")
    assert losses("b.csv") == a
    assert losses("c.csv", warmup=False) == a
    other = run(tiny(seed=1, window=1000, max_steps=10, log_every=5, log_path=tmp_path / "d.csv"))
    assert other.final_loss != float(a[-1][1])


def test_wall_time_cap_stops_the_run():
    result = run(tiny(max_steps=None, max_wall_time_s=1e-9, window=1000))
    assert not result.converged and result.stop_reason == "max_wall_time"
    assert result.iterations == 1


def test_a_run_needs_a_cap():
    with pytest.raises(ValueError, match="max_steps"):
        run(tiny(max_steps=None, max_wall_time_s=None))


@pytest.mark.parametrize(
    ("train", "name"),
    [({"max_steps": 0}, "max_steps"), ({"max_wall_time_s": -1.0}, "max_wall_time_s"),
     ({"log_every": 0}, "log_every"), ({"lr": 0.0}, "lr"), ({"window": 0}, "window")],
)
def test_bad_train_settings_name_themselves(train, name):
    with pytest.raises(ValueError, match=name):
        run(tiny(**train))


def test_interrupted_run_keeps_its_log(tmp_path, monkeypatch):
    real_step = train_mod.train_step
    calls = {"n": 0}

    def failing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 23:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", failing_step)
    path = tmp_path / "run.csv"
    with pytest.raises(KeyboardInterrupt):
        run(tiny(log_path=path, window=1000))
    assert [int(r["step"]) for r in read_log(path)] == [10, 20]


def test_nonfinite_loss_stops_the_run(monkeypatch):
    real_step = train_mod.train_step

    def nan_step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        return out._replace(loss=torch.tensor(math.nan))

    monkeypatch.setattr(train_mod, "train_step", nan_step)
    result = run(tiny(window=1000))
    assert result.stop_reason == "nonfinite_loss" and result.iterations == 10
    assert not result.converged


def test_a_loss_that_turns_nonfinite_between_log_steps_is_the_stop_reason(monkeypatch):
    real_step = train_mod.train_step
    calls = []

    def nan_from_step_4(*args, **kwargs):
        out = real_step(*args, **kwargs)
        calls.append(1)
        return out._replace(loss=torch.tensor(math.nan)) if len(calls) >= 4 else out

    monkeypatch.setattr(train_mod, "train_step", nan_from_step_4)
    result = run(tiny(window=1000, max_steps=5))  # logs every 10 steps: none before the end
    assert result.stop_reason == "nonfinite_loss" and result.iterations == 5


@pytest.mark.parametrize("seed", [None, 1.5, -1, 2**64, True], ids=str)
def test_a_bad_seed_names_itself(seed):
    with pytest.raises(ValueError, match="seed must be an integer in"):
        run(dataclasses.replace(tiny(), seed=seed))


def test_a_numpy_seed_is_the_same_run():
    np = pytest.importorskip("numpy")
    a, b = run(tiny(seed=3)), run(tiny(seed=np.int64(3)))
    assert (a.final_loss, a.iterations) == (b.final_loss, b.iterations)


def test_float16_training_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="dtype float16 cannot train here: Adam's eps"):
        run(dataclasses.replace(tiny(), dtype="float16"))


def test_a_seeded_model_leaves_every_global_generator_alone(monkeypatch):
    seeded = []
    monkeypatch.setattr(torch, "manual_seed", lambda s: seeded.append(s))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: seeded.append(s))
    state = torch.get_rng_state()
    make_model("gilr_lstm", 4, seed=7)
    assert seeded == [] and torch.equal(torch.get_rng_state(), state)


def test_convergence_stops_at_the_window(monkeypatch):
    # Accuracy forced to 1 from step 7 on: window 4 completes at step 10.
    real_step = train_mod.train_step
    calls = {"n": 0}

    def scripted(*args, **kwargs):
        calls["n"] += 1
        out = real_step(*args, **kwargs)
        return out._replace(accuracy=torch.tensor(1.0 if calls["n"] >= 7 else 0.5))

    monkeypatch.setattr(train_mod, "train_step", scripted)
    result = run(tiny(window=4, max_steps=100))
    assert result.converged and result.iterations == 10 and result.stop_reason == "converged"
    assert result.final_accuracy == 1.0


def test_gilr_lstm_learns_a_short_sequence(tmp_path):
    # Seeds 0-19 of this setting converged in 8-37 steps (about 0.5 s each) when it was written.
    config = RunConfig(seq_len=16, batch_size=8, seed=0, device="cpu",
                       model=ModelConfig("gilr_lstm", hidden=16),
                       train=TrainConfig(lr=1e-2, clip=20.0, max_steps=200, window=5),
                       log_path=str(tmp_path / "gilr.csv"))
    result = run(config)
    assert result.converged, result
    assert result.final_accuracy == 1.0 and result.iterations <= 200
    assert int(read_log(tmp_path / "gilr.csv")[-1]["step"]) == result.iterations
