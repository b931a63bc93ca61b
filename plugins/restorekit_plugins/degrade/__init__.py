"""Degradation stages (family `degrade.`): simulate the damage restorekit's stages repair.

Band limitation, requantization, noise, reverb, clipping, MP3, spectrogram gaps, drop-outs,
codec-like requantization, the random `generative_mix` recipe, and the text-to-music
damage (noise substitution, tilt, level and DC faults). The presets in
pipelines/degrade/ chain them (`restorekit degrade --list`). Only pydantic and
restorekit.stage are imported here; numpy, scipy, soxr and pedalboard load in `process`.
"""

from __future__ import annotations

from restorekit.hookspecs import hookimpl
from restorekit_plugins.degrade.stages import (
    STAGES,
    BandLimit,
    Clip,
    Codec,
    DcFault,
    Dropouts,
    GenerativeMix,
    Level,
    Mp3,
    Noise,
    NoiseSubstitute,
    Quantize,
    RandomLowpass,
    Reverb,
    SpectralGaps,
    Tilt,
)

__all__ = ["BandLimit", "Clip", "Codec", "DcFault", "Dropouts", "GenerativeMix", "Level", "Mp3", "Noise", "NoiseSubstitute",
           "Quantize", "RandomLowpass", "Reverb", "SpectralGaps", "Tilt"]


@hookimpl
def register_stages(register):
    """Register the degradation stages."""
    for cls in STAGES:
        register(cls)
