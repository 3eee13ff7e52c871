"""Figures for the foundation: CPU seconds per 1280x720 photo per variant, tiled-versus-untiled
agreement, and peak memory for a 4000x3000 photo with tiling.

Random weights cost exactly what the authors' do (same architecture), so no download is needed.
Run: python benchmarks/foundation.py [--repeats 3] [--big]   (--big adds the 4000x3000 run)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mimocli.arch import MIMOUNet
from mimocli.engine import Deblurrer

SHARED = Path(__file__).resolve().parents[2] / "shared"


def frame() -> np.ndarray:
    path = SHARED / "data/pairs/gopro_GOPR0384_11_00_000001/blur.png"
    if path.exists():
        from mimocli.images import read_image

        return read_image(path).pixels
    return np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)


def seconds_per_photo(repeats: int) -> dict[str, float]:
    img = frame()
    out = {}
    for name, n in (("mimo-unet", 8), ("mimo-unet-plus", 20)):
        torch.manual_seed(0)
        d = Deblurrer(MIMOUNet(n), device="cpu", precision="fp32", tile=0)
        d(img[:64, :64])  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            d(img)
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return out


def agreement() -> dict[str, float]:
    img = frame()
    torch.manual_seed(0)
    model = MIMOUNet(8)
    whole = Deblurrer(model, device="cpu", precision="fp32", tile=0)(img).image.astype(np.float64)
    res = {}
    for tile, overlap in ((256, 32), (256, 64), (512, 64)):
        tiled = Deblurrer(model, device="cpu", precision="fp32", tile=tile, tile_overlap=overlap)(img).image.astype(
            np.float64
        )
        mse = np.mean((tiled - whole) ** 2)
        res[f"tile{tile}_overlap{overlap}_psnr_db"] = (
            round(float(10 * np.log10(255**2 / mse)), 2) if mse else float("inf")
        )
        res[f"tile{tile}_overlap{overlap}_max_abs"] = float(np.abs(tiled - whole).max())
    return res


def big_child(tile: str) -> None:
    torch.manual_seed(0)
    img = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    d = Deblurrer(MIMOUNet(8), device="cpu", precision="fp32", tile=int(tile) if tile.isdigit() else tile)
    t = time.perf_counter()
    r = d(img)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record = {"tiles": r.tiles, "tile": r.tile_size, "seconds": round(time.perf_counter() - t, 1)}
    print(json.dumps({**record, "peak_rss_mb": round(peak)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="also time a 4000x3000 photo with tiling")
    ap.add_argument("--big-tile", default="512", help="tile for --big: a size or auto")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        big_child(a.child)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("seconds per 1280x720 photo (fp32, CPU, median):", json.dumps(seconds_per_photo(a.repeats)))
    print("tiled vs untiled (MIMO-UNet, 1280x720):", json.dumps(agreement()))
    if a.big:  # a fresh process, so that its peak memory is the 4000x3000 run's alone
        cmd = [sys.executable, __file__, "--child", a.big_tile]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        print(f"4000x3000 with --tile {a.big_tile} (MIMO-UNet, fp32, CPU):", done.stdout.strip())


if __name__ == "__main__":
    main()
