"""Gap inpainting (DSP): find drop-outs and fill them.

`inpaint.detect` only reports the gaps it finds; `inpaint.ar` fills short gaps (up to
about 100 ms) by autoregressive extrapolation from both sides; `inpaint.similarity` fills
longer ones (about 100 ms to 2 s) with the best-matching segment from elsewhere in the
file. All three find the gaps themselves with the same detector
(`restorekit_plugins._gaps.detect_gaps`): near-zero runs and abrupt level collapses inside
music, never musical rests. Audio without gaps comes out bit-identical; with gaps, only
the samples inside them (plus the cross-fade zones of `inpaint.similarity`) change.
See docs/stages/inpaint.md.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams

CPU = Accepts(devices=frozenset({"cpu"}))  # sample-level numpy work on the track where it lives
MAX_LISTED = 20  # gaps listed one by one in a note; more are counted


class DetectParams(StageParams):
    min_gap_ms: float = Field(5.0, ge=1, le=10_000, description="Shortest run counted as a gap, in ms.")
    max_gap_ms: float = Field(2000.0, ge=1, le=10_000,
                              description="Longest run counted as a gap, in ms; longer quiet runs are left alone.")
    silence_db: float = Field(-90.0, ge=-200, le=-40,
                              description="Level (dBFS, 2 ms frames) below which audio counts as digital silence.")
    drop_db: float = Field(40.0, ge=10, le=120,
                           description="How far (dB) the level must collapse, within edge_ms, into and out of "
                                       "a gap; a musical rest decays more slowly than this.")
    min_level_db: float = Field(-60.0, ge=-120, le=0,
                                description="The music on both sides of a gap must reach this level (dBFS) "
                                            "within edge_ms of it.")
    edge_ms: float = Field(15.0, ge=2, le=500,
                           description="Window (ms) on each side of a gap in which the fall and rise must happen.")
    margin_ms: float = Field(0.0, ge=0, le=100,
                             description="Widen every detected gap by this much on each side, in ms (e.g. 16 for "
                                         "gaps made by zeroing 32 ms STFT frames, whose edges fade).")

    @model_validator(mode="after")
    def _lengths(self):
        if self.min_gap_ms > self.max_gap_ms:
            raise ValueError(f"min_gap_ms ({self.min_gap_ms}) must not be greater than max_gap_ms ({self.max_gap_ms})")
        return self


class _GapStage(Stage):
    """Shared detection and reporting."""

    accepts = CPU
    method = ""

    def find(self, audio):
        from restorekit_plugins._gaps import detect_gaps

        p = self.params
        return detect_gaps(audio.numpy(), audio.sample_rate, min_gap_ms=p.min_gap_ms, max_gap_ms=p.max_gap_ms,
                           silence_db=p.silence_db, drop_db=p.drop_db, min_level_db=p.min_level_db,
                           edge_ms=p.edge_ms, margin_ms=p.margin_ms)

    def report(self, gaps, rate, verb, extra=""):
        if not gaps:
            self.note(f"{self.id}: no gaps found")
            return
        listed = ", ".join(g.describe(rate) for g in gaps[:MAX_LISTED])
        more = f" and {len(gaps) - MAX_LISTED} more" if len(gaps) > MAX_LISTED else ""
        self.note(f"{self.id}: {len(gaps)} gap(s) {verb}{extra}: {listed}{more}")


class Detect(_GapStage):
    """Find gaps (digital silence or an abrupt level collapse inside music) and report them; the audio passes unchanged.

    A gap is a run of 2 ms frames that is below `silence_db`, or at least `drop_db` below
    the music on both sides, entered and left abruptly (the level falls and rises by
    `drop_db` within `edge_ms`), between music that reaches `min_level_db`, and between
    `min_gap_ms` and `max_gap_ms` long. Musical rests are not gaps: the notes before a rest
    decay and the noise floor or room tone continues. Each gap is listed in the notes
    (start in seconds, length in ms, silence or dropout).
    """

    id = "inpaint.detect"
    summary = "Find drop-outs and zeroed blocks inside music and list them in the notes; audio unchanged."

    class Params(DetectParams):
        pass

    def process(self, audio):
        self.report(self.find(audio), audio.sample_rate, "found")
        return audio


class AR(_GapStage):
    """Fill short gaps by autoregressive extrapolation from both sides (Burg AR models, cross-faded).

    For each gap and channel, an AR model of `order` is fitted by Burg's method to up to
    `context_ms` before the gap and used to continue the signal forwards; another, fitted
    to the time-reversed `context_ms` after the gap, continues it backwards; the two are
    mixed with a raised-cosine weight (all forward at the start of the gap, all backward at
    its end). Only samples inside detected gaps change. Good for gaps up to about 100 ms;
    longer ones turn into a fading hum of the last partials (use inpaint.similarity).
    """

    id = "inpaint.ar"
    summary = "Fill short gaps (to ~100 ms) by AR extrapolation from both sides, cross-faded."
    method = "AR"

    class Params(DetectParams):
        max_gap_ms: float = Field(100.0, ge=1, le=10_000,
                                  description="Longest gap this stage fills, in ms; longer ones are left alone.")
        order: int = Field(1024, ge=4, le=4096, description="AR model order (samples).")
        context_ms: float = Field(500.0, ge=5, le=5000,
                                  description="Audio each side of a gap the AR models are fitted to, in ms "
                                              "(at least 2 x order samples are used).")

    def process(self, audio):
        import numpy as np

        from restorekit_plugins._gaps import ar_fill

        gaps = self.find(audio)
        rate = audio.sample_rate
        self.report(gaps, rate, "filled by AR extrapolation from both sides", f" (order {self.params.order})")
        if not gaps:
            return audio
        x = audio.numpy().astype(np.float64)  # filled gaps feed the context of the next one
        n = x.shape[1]
        for i, gap in enumerate(gaps):
            right = gaps[i + 1].start if i + 1 < len(gaps) else n
            x[:, gap.start:gap.stop] = ar_fill(x, gap, rate, self.params.order, self.params.context_ms, 0, right)
        out = audio.numpy().copy()
        for gap in gaps:
            out[:, gap.start:gap.stop] = x[:, gap.start:gap.stop]
        return audio.with_samples(_tensor(out))


class Similarity(_GapStage):
    """Fill longer gaps with the segment elsewhere in the file whose surroundings best match the gap's.

    Log-mel frames (48 bands, ~23 ms windows, ~5.8 ms hop at 44.1 kHz) of the mono mix are
    compared over `context_ms` before and after the gap (frames whose windows reach into
    the gap are skipped) with every shift whose whole span lies inside the file and clear
    of every gap; the best shift is aligned to the sample by correlating the waveform next
    to the gap's edges, level-matched on the RMS of 250 ms of context each side (within
    +-12 dB), and pasted into all channels with `crossfade_ms` raised-cosine cross-fades
    outside each edge. A gap with no usable source (file too short) is left and noted.
    """

    id = "inpaint.similarity"
    summary = "Fill longer gaps (~100 ms to 2 s) with the best-matching segment from elsewhere in the file."
    method = "similarity"

    class Params(DetectParams):
        min_gap_ms: float = Field(100.0, ge=1, le=10_000, description="Shortest gap this stage fills, in ms.")
        context_ms: float = Field(500.0, ge=20, le=10_000,
                                  description="Audio each side of a gap compared with candidate sources, in ms.")
        crossfade_ms: float = Field(10.0, ge=0, le=200,
                                    description="Cross-fade outside each edge of the gap, in ms.")

    def process(self, audio):
        import numpy as np

        from restorekit_plugins._gaps import find_match, log_mel, paste

        gaps = self.find(audio)
        rate = audio.sample_rate
        if not gaps:
            self.report(gaps, rate, "")
            return audio
        x = audio.numpy().astype(np.float64)
        mono = x.mean(axis=0)
        hop = max(1, round(rate * 256 / 44100))
        n_fft = 4 * hop
        xf = round(self.params.crossfade_ms * rate / 1000)
        feats = log_mel(mono, rate, hop, n_fft)
        forbidden = [(g.start - xf - n_fft, g.stop + xf + n_fft) for g in gaps]
        out = audio.numpy().copy()
        filled, parts, missed = [], [], []
        for gap in gaps:
            match = find_match(mono, rate, gap, forbidden, feats, hop, n_fft, self.params.context_ms, xf)
            if match is None:
                missed.append(gap)
                continue
            lo, hi, block = paste(x, gap, match, xf)
            out[:, lo:hi] = block
            filled.append(gap)
            parts.append(f"{gap.describe(rate)} from {match.source / rate:.3f} s "
                         f"(gain {20 * np.log10(match.gain):+.1f} dB, edge correlation {match.correlation:.2f})")
        if filled:
            self.note(f"{self.id}: {len(filled)} gap(s) filled by pasting the best-matching segment "
                      f"(log-mel context, {self.params.crossfade_ms:g} ms cross-fades): "
                      + ", ".join(parts[:MAX_LISTED]) + (f" and {len(parts) - MAX_LISTED} more"
                                                         if len(parts) > MAX_LISTED else ""))
        if missed:
            self.note(f"{self.id}: {len(missed)} gap(s) left unfilled, no source segment fits in the file: "
                      + ", ".join(g.describe(rate) for g in missed[:MAX_LISTED]))
        if not filled:
            return audio
        return audio.with_samples(_tensor(out))


def _tensor(samples):
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))


STAGES = (Detect, AR, Similarity)


@hookimpl
def register_stages(register):
    for cls in STAGES:
        register(cls)
