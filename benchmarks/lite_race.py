"""Which MIMO-UNet depth and width learn most per CPU-hour here: a race at equal CPU time.

Each candidate trains from scratch with the same data (sharp photos, a fresh shake per crop), seed
and recipe for about the same process CPU time; the validation split's PSNR is compared at equal
CPU seconds (linear interpolation between validations), and each candidate's final weights are
scored on the validation split's always-blurred crops (mimocli.train.VAL_SHAKE) beside the blurry
input's score. The 1280x720 inference time of each, as a share of MIMO-UNet's, is measured in the
same run: the lite variant may take at most a fifth.

    python benchmarks/lite_race.py ../shared/data/sharp --out /tmp/race --cpu-minutes 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mimocli.arch import MIMOUNet
from mimocli.device import reuse_freed_memory
from mimocli.evaluate import psnr
from mimocli.shake import split_of
from mimocli.train import VAL_CROPS, VAL_SHAKE, TrainOptions, loss_fn, train, validate
from mimocli.train_data import ShakeData, find_photos

CANDIDATES = [(4, 16), (6, 16), (3, 20)]  # (blocks per level, base channels)


def infer_seconds(num_res: int, width: int, iters: int = 3) -> float:
    model = MIMOUNet(num_res, width).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 720, 1280).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for _ in range(iters + 1):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def cpu_per_step(num_res: int, width: int, batch: int, crop: int) -> float:
    model = MIMOUNet(num_res, width).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.rand(batch, 3, crop, crop).contiguous(memory_format=torch.channels_last)
    y = torch.rand(batch, 3, crop, crop)
    times = []
    for _ in range(4):
        t = time.process_time()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.process_time() - t)
    return statistics.median(times[1:])


def val_crops(photos: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    data = ShakeData([p for p in find_photos([photos]) if split_of(p) == "val"], 256, VAL_SHAKE)
    crops = data.fixed(VAL_CROPS)
    data.close()
    return crops


def final_score(run: Path, num_res: int, width: int, crops: list[tuple[np.ndarray, np.ndarray]]) -> float:
    model = MIMOUNet(num_res, width)
    model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    return validate(model, crops, torch.device("cpu"))


def at(history: list[dict], cpu: float) -> float:
    pts = [(h["cpu_seconds"], h["val_psnr"]) for h in history if "val_psnr" in h]
    xs, ys = zip(*pts, strict=True)
    return float(np.interp(cpu, xs, ys))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cpu-minutes", type=float, default=16.0, help="CPU time per candidate")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    base = infer_seconds(8, 32, iters=2)
    rows = []
    for num_res, width in CANDIDATES:
        share = infer_seconds(num_res, width) / base
        per_step = cpu_per_step(num_res, width, 4, 256)
        steps = max(20, round(args.cpu_minutes * 60 / per_step))
        opts = TrainOptions(
            steps=steps, lr=args.lr, shake=True, val_every=max(10, steps // 6), checkpoint_every=max(10, steps // 6)
        )
        torch.manual_seed(0)
        run = args.out / f"r{num_res}c{width}"
        summary = train(MIMOUNet(num_res, width), [args.photos], run, opts, "cpu", resume=True)
        rows.append(
            {
                "num_res": num_res,
                "width": width,
                "params_m": sum(p.numel() for p in MIMOUNet(num_res, width).parameters()) / 1e6,
                "infer_share_of_mimo_unet": round(share, 3),
                "cpu_s_per_step": round(per_step, 2),
                "steps": steps,
                "cpu_seconds": round(summary.cpu_seconds),
                "history": summary.history,
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "history"}), flush=True)
    crops = val_crops(args.photos)
    blurry = float(np.mean([psnr(b, s) for b, s in crops]))
    for r in rows:
        r["final_val_psnr"] = round(
            final_score(args.out / f"r{r['num_res']}c{r['width']}", r["num_res"], r["width"], crops), 3
        )
        r["final_gain_db"] = round(r["final_val_psnr"] - blurry, 3)
    common = min(r["cpu_seconds"] for r in rows)
    for r in rows:
        r["val_psnr_at_common_cpu"] = round(at(r.pop("history"), common), 3)
    print(json.dumps({"common_cpu_seconds": common, "base_720p_seconds": round(base, 2), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
