"""Contract tests over every registered stage, and proof that `check_stage` catches each kind of breach.

The stage ids are read from the registry at collection time, so a stage is covered the
day its plugin registers it. A stage whose `unavailable()` gives a reason is skipped
with that reason (shown by `pytest -ra`) after its declaration was checked.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from core_fakes import NeedsCheckpoint, RngNoise, Scale
from pydantic import ConfigDict, Field
from restorekit.plugins import get_registry
from restorekit.stage import Accepts, Stage, StageParams
from restorekit.testing import check_stage, check_stage_declaration
from restorekit_tools.stage_docs import describe_stage, param_rows

REGISTRY = get_registry()
STAGE_IDS = sorted(REGISTRY.stages)
CORE_STAGES = {"util.resample", "util.channels", "util.gain", "util.trim", "util.pad", "mix.sum"}
HEAVY_MODULES = ["torch", "torchaudio", "scipy.signal", "noisereduce", "pedalboard", "librosa", "matplotlib",
                 "pyloudnorm", "soxr", "soundfile"]


@pytest.mark.parametrize("stage_id", STAGE_IDS)
def test_stage_contract(stage_id):
    check_stage(REGISTRY.stages[stage_id])


@pytest.mark.parametrize("stage_id", STAGE_IDS)
def test_stage_is_documented(stage_id):
    cls = REGISTRY.stages[stage_id]
    text = describe_stage(cls, REGISTRY.stages.owner(stage_id))
    assert text.startswith(f"{stage_id}: {cls.summary}")
    for row in param_rows(cls):
        assert f"  {row['name']}: {row['type']} = {row['default']}" in text
        assert row["help"] and row["help"] in text


def test_core_stages_are_registered_and_built_in_plugins_load():
    assert CORE_STAGES <= set(REGISTRY.stages)
    broken = [(p.name, p.error) for p in REGISTRY.plugins if p.error and p.distribution == "restorekit"]
    assert broken == []


def test_loading_every_plugin_imports_no_heavy_module():
    code = ("import json, sys; from restorekit.plugins import get_registry; get_registry(); "
            f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == [], "plugin modules must import these inside process()/load(), not at the top"


# -- check_stage itself must be able to fail ------------------------------------------------------

def test_check_stage_passes_a_good_stage():
    check_stage(Scale)
    check_stage(RngNoise)
    check_stage(_good_source())


def _good_source():
    from restorekit.audio import Audio

    class NoiseSource(Scale):
        id = "test.noise_source"
        source = True

        def output_spec(self, sample_rate, channels):
            return 16000, 1

        def process(self, audio):
            assert audio is None
            return Audio(torch.from_numpy(self.rng().standard_normal((1, 16000)).astype(np.float32) * 0.1), 16000)

    return NoiseSource


def test_check_stage_skips_an_unavailable_stage_with_its_reason():
    with pytest.raises(pytest.skip.Exception, match="test.needs_checkpoint cannot run here: the checkpoint"):
        check_stage(NeedsCheckpoint)


def test_check_stage_uses_test_params():
    class NeedsSmallModel(Scale):
        id = "test.small_model"

        class Params(StageParams):
            model: str = Field("big", description="Model name.")

        test_params = {"model": "tiny"}

        def process(self, audio):
            assert self.params.model == "tiny", "would download the big model"
            return audio

    check_stage(NeedsSmallModel)


def _breaches():
    class InPlace(Scale):
        id = "bad.in_place"

        def process(self, audio):
            audio.samples.mul_(0.5)
            return audio

    class Unseeded(Scale):
        id = "bad.unseeded"

        def process(self, audio):
            noise = np.random.default_rng().standard_normal(audio.samples.shape).astype(np.float32)
            return audio.with_samples(audio.samples + 0.01 * audio.samples.new_tensor(noise))

    class WrongSpec(Scale):
        id = "bad.wrong_spec"

        def output_spec(self, sample_rate, channels):
            return 48000, channels

    class NoDescription(Scale):
        id = "bad.no_description"

        class Params(StageParams):
            factor: float = Field(1.0, ge=0, le=2)

    class NoDefault(Scale):
        id = "bad.no_default"

        class Params(StageParams):
            factor: float = Field(ge=0, le=2, description="Required.")

    class AcceptsExtras(Scale):
        id = "bad.extras"

        class Params(StageParams):
            model_config = ConfigDict(extra="allow", frozen=True)

    class CudaOnly(Scale):
        id = "bad.cuda_only"
        accepts = Accepts(devices=frozenset({"cuda"}))

    class Crashes(Scale):
        id = "bad.crashes"

        def process(self, audio):
            return 1 / 0

    class BadOutputNames(Scale):
        id = "bad.output_names"

        def output_names(self):
            return ("a.b", "c")

    class NaNOnShortInput(Scale):
        id = "bad.nan_short"

        def process(self, audio):
            return audio.with_samples(audio.samples / (audio.frames - 16))

    class Empty(Scale):
        id = "bad.empty"

        def process(self, audio):
            return audio.with_samples(audio.samples[:, :0])

    class Transposed(Scale):
        id = "bad.transposed"

        def process(self, audio):
            return audio.with_samples(audio.samples.T.contiguous())

    class SourceBase(Scale):  # a source stage: one second of seeded noise at 16 kHz, mono
        id = "bad.source"
        source = True

        def output_spec(self, sample_rate, channels):
            return 16000, 1

        def process(self, audio):
            from restorekit.audio import Audio

            return Audio(torch.from_numpy(self.rng().standard_normal((1, 16000)).astype(np.float32) * 0.1), 16000)

    class SourceIgnoresSeed(SourceBase):
        id = "bad.source_seed"

        def process(self, audio):
            from restorekit.audio import Audio

            return Audio(torch.full((1, 16000), 0.1), 16000)

    class SourceWrongRate(SourceBase):
        id = "bad.source_rate"

        def output_spec(self, sample_rate, channels):
            return 32000, 1

    class SourceMerges(SourceBase):
        id = "bad.source_merges"
        merges = True

    return {
        SourceIgnoresSeed: "another seed gives the same audio",
        SourceWrongRate: "rate 16000 != declared 32000",
        SourceMerges: "a source stage takes no input, so it cannot merge",
        InPlace: "modified its input in place",
        Unseeded: "two runs with the same seed differ",
        WrongSpec: "rate 8000 != declared 48000",
        NoDescription: "parameter 'factor' has no description",
        NoDefault: "parameter 'factor' has no default",
        AcceptsExtras: "must reject unknown keys",
        CudaOnly: "every stage must run on the CPU",
        BadOutputNames: r"output names \['a.b'\] must be identifiers",
        NaNOnShortInput: r"16 frames: StageError: stage 'stage' \(bad.nan_short\) produced NaN or Inf",
        Crashes: r"on 2 ch, 8000 Hz, 4001 frames: ZeroDivisionError: division by zero",
        Empty: "empty output",
        Transposed: r"ch != declared",
    }


@pytest.mark.parametrize("cls,pattern", list(_breaches().items()), ids=lambda v: getattr(v, "id", ""))
def test_check_stage_catches(cls, pattern):
    with pytest.raises(AssertionError, match=pattern):
        check_stage(cls)


def test_check_stage_catches_a_cpu_only_stage_that_picks_cuda_itself():
    from restorekit import runner

    class PicksItsOwnDevice(Scale):
        id = "bad.own_device"
        accepts = Accepts(devices=frozenset({"cpu"}))

        def load(self):  # asks the machine instead of using the device the runner gave it
            self.device = runner.resolve_device("auto")

    with pytest.raises(AssertionError, match="declares no cuda but was placed on cuda"):
        check_stage(PicksItsOwnDevice)


def test_check_stage_declaration_returns_an_instance():
    stage = check_stage_declaration(Scale, {"factor": 3})
    assert isinstance(stage, Stage) and stage.params.factor == 3
