"""Inference speed of the learned stages: start-up, model load and real-time factor.

    python benchmarks/bench_neural.py [--stage restore.unet] [--seconds 180] [--rate 44100] [--channels 2]
                                      [--device cpu] [--band-limit-hz 8000] [--gaps 10] [--set param=value ...]

Synthesizes the input (the demo music, tiled; nothing is committed), then times, in one
process: imports, model load (`prepare`), and the stage run through a one-stage
pipeline on the whole input (the runner's resampling to the model's rate included).
`--band-limit-hz` low-passes the input first (an FFT brick wall), so stages that fill
in missing bands (the CRNN's Griffin-Lim) do that work too. `--gaps N` zeroes N blocks
(20, 50, 100, 200, 500, 1000 ms in turn, evenly spaced) for the inpainting stages.
rtf = seconds of audio per second of wall time. Memory: the process's resident set is
sampled every 10 ms during the run; `peak_growth_mb` is its peak minus its size just before
the run (model loaded, input in memory), also given in units of the input's size.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

T0 = time.perf_counter()
import numpy as np  # noqa: E402
import torch  # noqa: E402

from restorekit.audio import Audio  # noqa: E402
from restorekit_tools.demo import make_clean_clip  # noqa: E402
from restorekit.plugins import get_registry  # noqa: E402
from restorekit.runner import Pipeline  # noqa: E402

IMPORT_S = time.perf_counter() - T0


def native_cpu_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (not by emulation)."""
    import torch.cpu

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples the resident set size in a thread while the block runs."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())


def parse_value(text: str):
    """A --set value: JSON where it parses (numbers, true, null, lists), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="restore.unet")
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--band-limit-hz", type=float, default=None)
    parser.add_argument("--gaps", type=int, default=0, help="zeroed blocks to insert (inpainting stages)")
    parser.add_argument("--set", nargs="*", default=[], help="param=value for the stage")
    args = parser.parse_args()
    params = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    clip = make_clean_clip(10.0, seed=1, rate=args.rate)
    reps = int(np.ceil(args.seconds / 10.0))
    x = np.tile(clip, reps)[: int(args.seconds * args.rate)]
    x = np.stack([np.roll(x, 997 * c) for c in range(args.channels)]).astype(np.float32)
    if args.band_limit_hz:
        spec = np.fft.rfft(x, axis=-1)
        spec[:, np.fft.rfftfreq(x.shape[-1], 1 / args.rate) > args.band_limit_hz] = 0
        x = np.fft.irfft(spec, x.shape[-1], axis=-1).astype(np.float32)
    lengths_ms = (20, 50, 100, 200, 500, 1000)
    for g in range(args.gaps):
        start = int((g + 0.5) / args.gaps * x.shape[-1])
        x[:, start:start + lengths_ms[g % len(lengths_ms)] * args.rate // 1000] = 0.0
    audio = Audio(torch.from_numpy(x), args.rate)
    t = time.perf_counter()
    pipeline = Pipeline([get_registry().stages[args.stage](params)], device=args.device)
    pipeline.prepare(args.device)
    load_s = time.perf_counter() - t
    pipeline.run(Audio(audio.samples[:, : args.rate], args.rate))  # warm-up on 1 s
    t = time.perf_counter()
    with PeakRss() as memory:
        pipeline.run(audio)
    run_s = time.perf_counter() - t
    growth = memory.peak - memory.start
    print(json.dumps({"stage": args.stage, "params": params, "device": pipeline.device,
                      "input": f"{args.seconds:g} s, {args.rate} Hz, {args.channels} ch",
                      "band_limit_hz": args.band_limit_hz, "gaps": args.gaps,
                      "threads": torch.get_num_threads(), "cpu_bfloat16_native": native_cpu_bfloat16(), "import_s": round(IMPORT_S, 2),
                      "load_s": round(load_s, 2), "run_s": round(run_s, 2),
                      "rtf": round(args.seconds / run_s, 1), "input_mb": round(x.nbytes / 2**20, 1),
                      "peak_growth_mb": round(growth / 2**20, 1),
                      "peak_growth_inputs": round(growth / x.nbytes, 2)}, indent=2))


if __name__ == "__main__":
    main()
