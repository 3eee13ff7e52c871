"""Seconds per training step and crops per second on this CPU, as `mimo train --shake` runs them.

Each case trains from the same seed on sharp photos with a fresh shake per crop (256 px crops,
batch 4, the real data path: decoding, shaking and batching in background threads) and reports
the median wall seconds per step after a warm-up, crops per second, and how long the steps
waited for data. Cases: for each architecture, where the shake is rendered (OpenCV in CPU threads,
"workers"; torch on the training device, "device": here the CPU too) and the memory format
(channels-last by default; NCHW with --formats nchw channels_last).

    python benchmarks/train_speed.py ../shared/data/sharp --variants lite base --steps 6
    python benchmarks/train_speed.py .pack/sharp.zip --variants lite --crop 128 --batch 8

Measured with that command (Intel Xeon, 2 cores, 2026-12-06): workers 0.64 s per step (12.5
crops/s), device 0.63 s (12.8 crops/s); at 256 px and batch 4, 1.21 s and 1.19 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mimocli.arch import MIMOUNet
from mimocli.device import reuse_freed_memory
from mimocli.registry import get_variant
from mimocli.train import TrainOptions, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", type=Path)
    ap.add_argument("--variants", nargs="+", default=["lite", "base"])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per case, after one warm-up step")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--shake-on", nargs="+", default=["workers", "device"], choices=["workers", "device"])
    ap.add_argument("--formats", nargs="+", default=["channels_last"], choices=["nchw", "channels_last"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reuse_freed_memory()
    rows = []
    for name in args.variants:
        v = get_variant(name)
        for shake_on, fmt in [(r, f) for r in args.shake_on for f in args.formats]:
            channels_last = fmt == "channels_last"
            ticks: list[float] = []
            opts = TrainOptions(
                steps=args.steps + 1,
                batch=args.batch,
                crop=args.crop,
                shake=True,
                channels_last=channels_last,
                shake_on=shake_on,
                log_every=1,
                val_every=10**9,
                checkpoint_every=10**9,
            )
            torch.manual_seed(0)
            with tempfile.TemporaryDirectory() as out:
                s = train(
                    MIMOUNet(v.num_res, v.base_channel),
                    [args.photos],
                    out,
                    opts,
                    "cpu",
                    val=None,
                    on_progress=lambda *_, ticks=ticks: ticks.append(time.perf_counter()),
                )
            per_step = statistics.median(b - a for a, b in zip(ticks, ticks[1:], strict=False))
            waits = [h["data_wait"] for h in s.history[1:] if "data_wait" in h]
            rows.append(
                {
                    "variant": v.name,
                    "shake_on": shake_on,
                    "channels_last": channels_last,
                    "s_per_step": round(per_step, 2),
                    "crops_per_s": round(args.batch / per_step, 2),
                    "data_wait_s_per_step": round(statistics.fmean(waits), 3) if waits else None,
                    "threads": torch.get_num_threads(),
                }
            )
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
