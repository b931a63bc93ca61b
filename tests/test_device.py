"""Device selection and placement: auto/cpu/cuda/cuda:N, clear errors, CPU-only stages stay on the CPU.

There may be no GPU: CUDA is faked with pytest's monkeypatch (undone after each test) on
`torch.cuda.is_available` / `device_count` or on the runner's `resolve_device`. The tests
at the end run on a real GPU when there is one.
"""

from __future__ import annotations

import pytest
import torch
from core_fakes import CpuOnly, Recorder, Scale

from restorekit import runner
from restorekit.device import check_device_spec, resolve_device, stage_device
from restorekit.errors import DeviceError, UsageError
from restorekit.runner import Node, Pipeline
from restorekit.testing import synth_audio

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch reports two CUDA devices (nothing is ever moved to them in these tests)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("spec", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_valid_spellings(spec):
    assert check_device_spec(spec) is None


@pytest.mark.parametrize("spec", ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda0", "mps", "", None, 0])
def test_invalid_spellings_are_usage_errors(spec):
    assert check_device_spec(spec) == f"device must be auto, cpu, cuda or cuda:N, got {spec!r}"
    with pytest.raises(DeviceError, match="device must be auto, cpu, cuda or cuda:N"):
        resolve_device(spec)
    assert issubclass(DeviceError, UsageError) and DeviceError.exit_code == 2


def test_auto_is_cpu_without_a_gpu(no_cuda):
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


def test_auto_is_cuda_with_a_gpu(fake_cuda):
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cpu") == "cpu"


def test_cuda_without_a_gpu_is_a_clear_error(no_cuda):
    with pytest.raises(DeviceError) as info:
        resolve_device("cuda")
    message = str(info.value)
    assert message.startswith("device 'cuda' was requested but torch sees no CUDA GPU on this machine (torch ")
    assert message.endswith("use --device cpu or --device auto")
    with pytest.raises(DeviceError, match="device 'cuda:1' was requested"):
        resolve_device("cuda:1")


def test_a_missing_gpu_index_is_a_clear_error(fake_cuda):
    with pytest.raises(DeviceError, match=r"device 'cuda:2' does not exist: torch sees 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("device,accepted,expected", [
    ("cuda", {"cpu", "cuda"}, "cuda"),
    ("cuda:1", {"cpu", "cuda"}, "cuda:1"),
    ("cuda", {"cpu"}, "cpu"),
    ("cuda:1", {"cpu"}, "cpu"),
    ("cpu", {"cpu", "cuda"}, "cpu"),
])
def test_stage_device(device, accepted, expected):
    assert stage_device(device, frozenset(accepted)) == expected


def test_pipeline_on_cuda_keeps_cpu_only_stages_on_the_cpu(monkeypatch):
    monkeypatch.setattr(runner, "resolve_device", lambda spec: "cuda" if spec in ("auto", "cuda") else spec)
    cpu_stage, any_stage = CpuOnly(), Recorder()
    p = Pipeline([Node("c", cpu_stage), Node("g", any_stage)], device="auto")
    assert p.prepare() == "cuda"
    assert (cpu_stage.device, any_stage.device) == ("cpu", "cuda")
    assert cpu_stage.loaded_on == ["cpu"] and any_stage.loaded_on == ["cuda"]  # loaded where they run


def test_a_cpu_only_pipeline_runs_when_cuda_is_asked_for(monkeypatch):
    monkeypatch.setattr(runner, "resolve_device", lambda spec: "cuda")
    stage = CpuOnly()
    p = Pipeline([stage], device="cuda")
    x = synth_audio(2, 44100, frames=256)
    out = p(x)
    assert stage.seen == [(44100, 2, 256, "cpu")]
    assert out.device.type == "cpu" and torch.equal(out.samples, x.samples)


def test_changing_device_reloads_on_the_new_device(monkeypatch):
    stage = Recorder()
    p = Pipeline([stage], device="cpu")
    p.prepare()
    p.prepare("cpu")  # same device: nothing reloads
    assert stage.loaded_on == ["cpu"]
    monkeypatch.setattr(runner, "resolve_device", lambda spec: spec)
    p.prepare("cuda:1")
    assert stage.device == "cuda:1" and stage.loaded_on == ["cpu", "cuda:1"]


def test_pipeline_device_from_cuda_without_gpu_is_an_error(no_cuda):
    with pytest.raises(DeviceError, match="torch sees no CUDA GPU"):
        Pipeline([Scale()], device="cuda").run(synth_audio())


# -- on a real GPU --------------------------------------------------------------------------------

def test_a_stage_placed_on_cuda_gets_the_track_on_the_cpu(monkeypatch):
    monkeypatch.setattr(runner, "resolve_device", lambda spec: "cuda")
    cpu_stage, gpu_stage = CpuOnly(), Recorder()
    p = Pipeline([Node("c", cpu_stage), Node("g", gpu_stage)], device="cuda")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)  # no GPU here: the runner's timing sync
    x = synth_audio(2, 44100, frames=256)
    out = p(x)
    assert gpu_stage.device == "cuda" and gpu_stage.loaded_on == ["cuda"]  # placed (and loaded) on the GPU
    assert gpu_stage.seen[0][3] == "cpu"  # one-way route: whole tracks stay on the CPU; the stage moves what it needs
    assert out.device.type == "cpu" and torch.equal(out.samples, x.samples)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_on_a_gpu_tensors_move_only_where_needed():
    cpu_stage, gpu_stage = CpuOnly(), Recorder()
    p = Pipeline([Node("g1", Recorder()), Node("c", cpu_stage), Node("g2", gpu_stage)], device="cuda")
    x = synth_audio(2, 44100)
    out = p(x)
    assert cpu_stage.seen[0][3] == "cpu"
    assert gpu_stage.device.startswith("cuda") and gpu_stage.seen[0][3] == "cpu"  # tracks stay on the CPU
    assert out.device.type == "cpu"
    assert torch.equal(out.samples, x.samples)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_on_a_gpu_auto_picks_cuda():
    assert resolve_device("auto") == "cuda"
