"""A CPU smoke run of training: camera-shake pairs from the sharp photos in ../shared/data/sharp
(Kodak24 and Urban100), then MIMO-UNet from random weights for a few hundred steps, validated on
the real GoPro crop in ../shared/data/pairs. Prints the loss at the start and the end and the
validation PSNR; the run folder keeps metrics.jsonl and loss.png.

Run: python benchmarks/train_smoke.py [--steps 200] [--crop 96] [--batch 4] [--out /tmp/mimo-smoke]
The same run from the command line:
    mimo synth --shake SHARP/Kodak24 SHARP/Urban100 OUT/pairs
    mimo train OUT/pairs --out OUT/run --variant base --steps 200 --crop 96 --batch 4 --log-every 5 \\
        --val-every 50 --checkpoint-every 50 --val ../shared/data/pairs/gopro_crop256_000008
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from mimocli.arch import MIMOUNet
from mimocli.synth import synth_from_stills
from mimocli.train import TrainOptions, train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("/tmp/mimo-smoke"))
    args = ap.parse_args()
    pairs = args.out / "pairs"
    synth_from_stills([SHARED / "sharp/Kodak24", SHARED / "sharp/Urban100"], pairs, resume=True)
    torch.manual_seed(0)
    opts = TrainOptions(
        steps=args.steps, batch=args.batch, crop=args.crop, log_every=5, val_every=50, checkpoint_every=50
    )
    s = train(MIMOUNet(8), pairs, args.out / "run", opts, "auto", SHARED / "pairs/gopro_crop256_000008", resume=True)
    losses = [h["loss"] for h in s.history if "loss" in h]
    vals = [(h["step"], round(h["val_psnr"], 2)) for h in s.history if "val_psnr" in h]
    record = {
        "steps": s.steps,
        "seconds": round(s.seconds, 1),
        "loss_first_10_logs": round(statistics.fmean(losses[:10]), 4),
        "loss_last_10_logs": round(statistics.fmean(losses[-10:]), 4),
        "val_psnr": vals,
        "plot": str(args.out / "run/loss.png"),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
