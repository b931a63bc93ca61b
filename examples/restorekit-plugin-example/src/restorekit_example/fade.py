"""`example.fade`: fade the start in from silence and the end out to silence."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from restorekit.stage import Accepts, Stage, StageParams


class Fade(Stage):
    """Multiply the first `fade_in_ms` by a rising gain ramp and the last `fade_out_ms` by a falling one.

    Text-to-music models stop at a fixed length, often mid-note; a fade-out turns the
    cut into an ending without a click. The first output sample of a fade-in and the
    last of a fade-out are exactly 0. Fades longer than the audio are cut to its length;
    when the two overlap (short audio) both apply. Everything between is left untouched.
    """

    id = "example.fade"
    summary = "Fade the start in from silence and the end out to silence (linear or cosine)."
    accepts = Accepts(devices=frozenset({"cpu"}))  # a gain curve: cheapest on the CPU, where the track lives

    class Params(StageParams):
        fade_in_ms: float = Field(10.0, ge=0, le=60_000,
                                  description="Length of the fade-in at the start, in milliseconds (0: none).")
        fade_out_ms: float = Field(1000.0, ge=0, le=60_000,
                                   description="Length of the fade-out at the end, in milliseconds (0: none).")
        shape: Literal["linear", "cosine"] = Field(
            "cosine", description="Gain curve: linear (straight line) or cosine (half a cosine period, "
                                  "smooth at both ends).")

    def process(self, audio):
        frames, rate = audio.frames, audio.sample_rate
        n_in = min(frames, round(self.params.fade_in_ms * rate / 1000))
        n_out = min(frames, round(self.params.fade_out_ms * rate / 1000))
        if n_in == 0 and n_out == 0:
            return audio
        out = audio.samples.clone()  # never change the input: another stage may read it too
        if n_in:
            out[:, :n_in] *= self.ramp(n_in, out)
        if n_out:
            out[:, frames - n_out:] *= self.ramp(n_out, out).flip(0)
        return audio.with_samples(out)

    def ramp(self, n, like):
        """`n` gains rising from exactly 0 towards 1 (the 1 itself is the first untouched sample)."""
        import torch

        t = torch.arange(n, dtype=torch.float64, device=like.device) / n
        if self.params.shape == "cosine":
            t = 0.5 - 0.5 * torch.cos(torch.pi * t)
        return t.to(like.dtype)
