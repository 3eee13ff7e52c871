"""Crops per second of camera shake, rendered the two ways `mimo train --shake` can: OpenCV in CPU
threads ("workers", what a CPU run uses) and torch on a device ("device", mimocli.shake_torch).

    python benchmarks/shake_speed.py .pack/sharp.zip --device cpu --batches 5
    python benchmarks/shake_speed.py .pack/sharp.zip --device cuda --batches 20

Both render the same drawn crops (same seeds); the draw itself (trajectory, homographies,
noise field) runs on the CPU for both and is timed apart. Median seconds per batch after one
warm-up batch; prints one JSON line per path.

Measured (batches of 16 crops of 256 px, 2 threads): on an Intel Xeon with 2 cores, 2026-12-06,
workers 147 crops/s, torch on the CPU 56, the draw alone 1,099; on the first GPU run's H100
(8 threads, before the batched host copies), workers 200, torch on the GPU 181, the draw 637.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mimocli.shake import ShakeModel, split_of
from mimocli.shake_torch import render_crops
from mimocli.train_data import ShakeData, find_photos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", type=Path, nargs="+")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="CPU threads that render (workers) or draw (device)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    photos = [p for p in find_photos(args.photos) if split_of(p) == "train"]
    data = ShakeData(photos, args.crop, ShakeModel(), workers=args.workers)
    for i in range(len(photos)):
        data.load(i)  # decoded once, as a training run keeps them
    uploaded = {i: torch.from_numpy(data.load(i)).permute(2, 0, 1).to(dev) for i in range(len(photos))}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> list[float]:
        ticks = []
        for b in range(args.batches + 1):
            rng = np.random.default_rng([0, b])
            sync()
            t = time.perf_counter()
            fn(rng)
            sync()
            ticks.append(time.perf_counter() - t)
        return ticks[1:]

    def device_render(rng: np.random.Generator) -> None:
        plans = data.plans(rng, args.batch, True)
        render_crops([uploaded[i] for i, _, _ in plans], [c for _, c, _ in plans], [f for _, _, f in plans])

    rows = {
        "workers": timed(lambda rng: data.batch(rng, args.batch, args.crop, True)),
        "draw only": timed(lambda rng: data.plans(rng, args.batch, True)),
        "device": timed(device_render),
    }
    for name, ticks in rows.items():
        med = statistics.median(ticks)
        line = {"path": name, "device": str(dev), "threads": args.workers, "s_per_batch": round(med, 4)}
        line["crops_per_s"] = round(args.batch / med, 1)
        print(json.dumps(line), flush=True)
    data.close()


if __name__ == "__main__":
    main()
