"""Merging stages: `mix.sum` adds its inputs with a gain in dB for each."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams


class MixSum(Stage):
    id = "mix.sum"
    summary = "Sum several inputs (stems) with a gain in dB for each; remixes a separated track."
    accepts = Accepts(devices=frozenset({"cpu"}))  # a weighted sum: cheaper on the CPU the tracks live on
    merges = True

    class Params(StageParams):
        gains_db: list[Annotated[float, Field(ge=-120, le=60)]] | None = Field(
            None, description="Gain in dB for each input (-120 to 60), in the order of `input`; "
                              "empty: 0 dB for all.")
        length: Literal["longest", "shortest"] = Field(
            "longest", description="When inputs differ in length: pad to the longest or cut to the shortest.")

    def check_inputs(self, count):
        gains = self.params.gains_db
        if gains is not None and len(gains) != count:
            return f"with.gains_db has {len(gains)} value(s) for {count} input(s); give one gain per input"
        return None

    def process(self, inputs):
        import torch.nn.functional as F

        from restorekit.dsp import db_to_gain
        from restorekit.errors import StageError

        gains = self.params.gains_db or [0.0] * len(inputs)
        if len(gains) != len(inputs):
            raise StageError(f"gains_db has {len(gains)} values for {len(inputs)} inputs; give one per input")
        frames = [a.frames for a in inputs]
        n = max(frames) if self.params.length == "longest" else min(frames)
        total = None
        for audio, gain_db in zip(inputs, gains):
            x = audio.samples[:, :n]
            if x.shape[1] < n:
                x = F.pad(x, (0, n - x.shape[1]))
            x = x * db_to_gain(gain_db) if gain_db else x
            total = x.clone() if total is None else total.add_(x)
        return inputs[0].with_samples(total)


@hookimpl
def register_stages(register):
    register(MixSum)
