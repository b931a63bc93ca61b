"""What a quality-estimator run's scored pool is made of, and subsets of it for ablations.

    python scripts/cqs_pool.py runs/cqs-v2                       # clips and ViSQOL per recipe
    python scripts/cqs_pool.py runs/cqs-v2 --drop pipelines/training/restored-unet.yaml,... -o runs/cqs-ablation

`restorekit train cqs` scores its pool once (RUN_DIR/pool.safetensors) but stores no
recipe per clip. The recipe of each clip follows from the run's seed: this replays the
trainer's draws (segments of the training split, then one seed per clip; the recipe is
`seed % len(recipes)`) without degrading or scoring anything, and checks the replay on the
identity (`none`) clips, whose input is the clean segment itself. With `--drop`, the
clips of the named recipes are left out and the rest written to OUT/pool.safetensors: a
`restorekit train cqs ... --hparams '{"pool_size": N}' -o OUT` then trains on that subset
(the trainer reuses a cached pool of the configured size) without scoring again.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from restorekit_tools.training.data import NO_DAMAGE, SegmentSource, find_audio_files, load_mono, split_files


def replay_recipes(run: Path) -> tuple[list[str], list[int], list[np.ndarray]]:
    """The run's recipe list, each pool clip's recipe index, and each clip's clean segment."""
    config = json.loads((run / "config.json").read_text())
    recipes = [p.strip() for p in config["degrade"].split(",")]
    pool_size = len(load_file(str(run / "pool.safetensors"))["targets"])
    files = find_audio_files([Path(d) for d in config["data"]])
    train = split_files(files, config["val_fraction"], config["test_fraction"])["train"]
    cache = Path(os.environ.get("RESTOREKIT_DATA_CACHE", run / "decoded"))
    rate = 32000
    source = SegmentSource([load_mono(p, rate, cache) for p in train], [p.name for p in train],
                           int(round(config["segment_s"] * rate)))
    rng = np.random.default_rng(config["seed"] + 2)
    index, clean = [], []
    for start in range(0, pool_size, config["batch_size"]):
        count = min(config["batch_size"], pool_size - start)
        segments = [source.sample(rng) for _ in range(count)]
        seeds = [int(rng.integers(0, 2**31 - 1)) for _ in segments]
        index += [s % len(recipes) for s in seeds]
        clean += segments
    return recipes, index, clean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--drop", default="", help="recipes (as named in --degrade) whose clips are left out")
    parser.add_argument("-o", "--out", type=Path)
    args = parser.parse_args()
    pool = load_file(str(args.run / "pool.safetensors"))
    recipes, index, clean = replay_recipes(args.run)
    for k, (i, c) in enumerate(zip(index, clean)):
        if recipes[i] == NO_DAMAGE and not np.array_equal(pool["inputs"][k, 0].numpy(), c):
            raise SystemExit(f"clip {k}: the replay does not match the pool (different data or cache?)")
    targets = pool["targets"].numpy()
    checked = sum(recipes[i] == NO_DAMAGE for i in index)
    composition = {}
    for i, name in enumerate(recipes):
        if name in composition:
            continue
        t = targets[[k for k, j in enumerate(index) if recipes[j] == name]]
        composition[name] = {"clips": len(t)}
        if len(t):
            composition[name].update(visqol_mean=round(float(t.mean()), 3), visqol_min=round(float(t.min()), 3),
                                     visqol_max=round(float(t.max()), 3))
    print(json.dumps({"pool": len(targets), "replay_checked_on_identity_clips": checked, "recipes": composition},
                     indent=2))
    if args.drop:
        drop = {p.strip() for p in args.drop.split(",")}
        unknown = drop - set(recipes)
        if unknown:
            raise SystemExit(f"--drop: not in the run's recipes: {', '.join(sorted(unknown))}")
        keep = torch.tensor([k for k, j in enumerate(index) if recipes[j] not in drop])
        args.out.mkdir(parents=True, exist_ok=True)
        save_file({"inputs": pool["inputs"][keep].contiguous(), "targets": pool["targets"][keep].contiguous()},
                  str(args.out / "pool.safetensors"))
        print(f"{len(keep)} of {len(targets)} clips in {args.out / 'pool.safetensors'}: train with "
              f"--hparams '{{\"pool_size\": {len(keep)}}}' -o {args.out}")


if __name__ == "__main__":
    main()
