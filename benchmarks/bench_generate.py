"""Generation speed of `generate.musicgen`: load time (transformers import and model build or load)
and the time to generate clips of a few lengths, as RTF = generation time / clip duration.

With the default `--model tiny` nothing is downloaded: the tiny random-weight model measures the
stage's own overhead (tokenizing, the sampling loop with classifier-free guidance, EnCodec
decoding), not MusicGen's real cost. A hub model is measured only if it is already in the
Hugging Face cache or can be downloaded (`download: true`). Figures: docs/stages/generate.md.

    python benchmarks/bench_generate.py                              # tiny, 1 and 5 s, 3 rounds, CPU
    python benchmarks/bench_generate.py --model facebook/musicgen-small --seconds 10 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 5.0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    start = time.perf_counter()
    import torch
    from restorekit_plugins.generate import MusicGen

    stage = MusicGen(model=args.model, duration_s=args.seconds[0], prompt="lo-fi piano with soft drums")
    stage.place(args.device)
    load_s = time.perf_counter() - start
    print(f"{args.model} on {args.device} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads): load {load_s:.2f} s "
          "(imports included)")
    for seconds in args.seconds:
        timed = MusicGen(model=args.model, duration_s=seconds, prompt="lo-fi piano with soft drums")
        timed.place(args.device)
        times = []
        for r in range(args.rounds):
            t0 = time.perf_counter()
            timed.run(None, seed=r)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        best, median = min(times), statistics.median(times)
        print(f"  {seconds:g} s clip: best {best:.2f} s (RTF {best / seconds:.2f}), median {median:.2f} s "
              f"(RTF {median / seconds:.2f}) over {args.rounds} rounds")


if __name__ == "__main__":
    main()
