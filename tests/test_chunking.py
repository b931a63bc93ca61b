"""The chunked overlap-add helper gives the whole-signal result and keeps memory flat."""

from __future__ import annotations

import pytest
import torch

from restorekit.chunking import ChunkPlan, process_in_chunks

RECEPTIVE = 8  # each side, for two kernel-9 convolutions


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv1d(2, 8, 9, padding=4), torch.nn.Tanh(), torch.nn.Conv1d(8, 2, 9, padding=4)
    ).eval()


def whole(net, x):
    with torch.inference_mode():
        padded = torch.nn.functional.pad(x[None], (RECEPTIVE, RECEPTIVE), mode="reflect")
        return net(padded)[0, :, RECEPTIVE:-RECEPTIVE]


@pytest.mark.parametrize("plan", [ChunkPlan(1000, 200, RECEPTIVE), ChunkPlan(999, 0, RECEPTIVE),
                                  ChunkPlan(4096, 1024, 32), ChunkPlan(50_000, 100, RECEPTIVE)])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_chunked_equals_whole_when_context_covers_the_receptive_field(net, plan, batch_size):
    x = torch.randn(2, 10_007)
    y = process_in_chunks(net, x, plan, batch_size=batch_size, precision="float32")
    assert y.shape == x.shape and y.dtype == torch.float32
    assert (y - whole(net, x)).abs().max() < 1e-5


def test_without_context_seams_are_crossfaded_not_hard(net):
    x = torch.randn(2, 8000)
    ref = whole(net, x)
    hard = process_in_chunks(net, x, ChunkPlan(1000, 0, 0), precision="float32")
    faded = process_in_chunks(net, x, ChunkPlan(1000, 250, 0), precision="float32")
    # the cross-fade spreads the edge error; context removes it (test above)
    assert (faded - ref).abs().max() < (hard - ref).abs().max()


def test_identity_is_exact_for_any_geometry():
    x = torch.randn(1, 12_345)
    for plan in (ChunkPlan(100, 99, 0), ChunkPlan(5000, 1234, 77), ChunkPlan(1, 0, 0)):
        assert torch.allclose(process_in_chunks(lambda b: b, x, plan, batch_size=4), x, atol=1e-6)


def test_output_channels_may_differ_and_short_input_works():
    x = torch.randn(2, 10)
    y = process_in_chunks(lambda b: b.mean(dim=1, keepdim=True), x, ChunkPlan(1000, 100, 50))
    assert y.shape == (1, 10)
    assert torch.allclose(y, x.mean(0, keepdim=True), atol=1e-6)


def test_bad_function_output_is_refused():
    with pytest.raises(ValueError, match="keep the batch size and the length"):
        process_in_chunks(lambda b: b[..., :-1], torch.zeros(1, 100), ChunkPlan(50, 10, 0))


def test_plan_from_seconds_and_validation():
    plan = ChunkPlan.from_seconds(32000, segment_s=1.0, overlap_s=0.25, context_s=0.01, multiple_of=256)
    assert plan.segment % 256 == 0 and plan.overlap % 256 == 0 and plan.context % 256 == 0
    assert plan.segment >= 32000 and plan.overlap >= 8000
    with pytest.raises(ValueError):
        ChunkPlan(100, 100, 0)


def test_precision_auto_is_float16_on_cuda_and_float32_on_cpu():
    import restorekit.chunking as chunking

    assert chunking.autocast_dtype("auto", torch.device("cuda")) is torch.float16
    assert chunking.autocast_dtype("auto", torch.device("cpu")) is None
    assert chunking.autocast_dtype("float32", torch.device("cuda")) is None
    assert chunking.autocast_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        chunking.autocast_dtype("half", torch.device("cpu"))


def test_bfloat16_autocast_stays_close_to_float32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 8, 9, padding=4), torch.nn.Tanh(), torch.nn.Conv1d(8, 2, 9, padding=4))
    x = torch.randn(2, 5000)
    plan = ChunkPlan(1000, 100, 8)
    exact = process_in_chunks(net, x, plan, precision="float32")
    fast = process_in_chunks(net, x, plan, precision="bfloat16")
    assert fast.dtype == torch.float32
    error_db = 10 * torch.log10(((fast - exact) ** 2).sum() / (exact ** 2).sum())
    assert -60 < error_db < -30  # bfloat16 really ran (not bit-exact) and stayed close
