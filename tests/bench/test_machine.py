"""Machine names: a CPU's results and asv history are kept per microarchitecture, because cloud
VMs report the same model name ('Intel Xeon Processor', 'AMD EPYC') across generations."""

from __future__ import annotations

import pytest

from plrnn.bench import machine


@pytest.mark.parametrize(
    "ident, uarch",
    [
        (("GenuineIntel", 6, 85, 4), "skylake-sp"),
        (("GenuineIntel", 6, 85, 7), "cascadelake"),
        (("GenuineIntel", 6, 143, 8), "sapphirerapids"),
        (("AuthenticAMD", 23, 49, 0), "zen2"),
        (("AuthenticAMD", 25, 1, 1), "zen3"),
        (("AuthenticAMD", 25, 17, 1), "zen4"),
        (("GenuineIntel", 6, 250, 0), "f6m250"),
        (None, None),
    ],
)
def test_microarchitecture_from_cpuid(monkeypatch, ident, uarch):
    monkeypatch.setattr(machine, "_cpuid", lambda: ident)
    assert machine.microarchitecture() == uarch


def test_machine_name_tells_generations_apart(monkeypatch):
    monkeypatch.setattr(machine, "cpu_model", lambda: "Intel(R) Xeon(R) Processor @ 2.00GHz")
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    names = set()
    for model in (85, 143):
        monkeypatch.setattr(machine, "_cpuid", lambda m=model: ("GenuineIntel", 6, m, 4))
        names.add(machine.machine_name("cpu"))
    assert names == {"cpu-intel-xeon-skylake-sp-2c", "cpu-intel-xeon-sapphirerapids-2c"}
    monkeypatch.setattr(machine, "_cpuid", lambda: None)
    assert machine.machine_name("cpu") == "cpu-intel-xeon-2c"


def test_this_machine_has_a_name():
    name = machine.machine_name("cpu")
    assert name.startswith("cpu-") and name.endswith("c") and " " not in name
