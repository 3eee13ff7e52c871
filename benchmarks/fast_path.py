"""Figures for the fast path: baseline (eager fp32 NCHW, how the authors' code runs) against what
mimocli runs by default, for MIMO-UNet and MIMO-UNet+ at 1280x720, measured in one run, with
the relative error and PSNR between the two outputs. Optionally a torch.compile row.

The frames are the real GoPro test frame from ../shared when it is there (noise otherwise); the
weights are seeded random weights, which cost exactly what the published ones do.

Run: python benchmarks/fast_path.py [--iters 3] [--warmup 1] [--compile] [--no-reuse-memory] [--json FILE]
The same figures come from: mimo bench --variant all --image ../shared/data/pairs/gopro_GOPR0384_11_00_000001/blur.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mimocli.bench import BenchCase, bench_suite, random_model
from mimocli.images import read_image
from mimocli.registry import get_variant
from mimocli.settings import RunSettings

SHARED = Path(__file__).resolve().parents[2] / "shared"
FRAME = SHARED / "data/pairs/gopro_GOPR0384_11_00_000001/blur.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--variants", default="base,plus")
    ap.add_argument("--compile", action="store_true", help="add a compiled fast-path row per variant")
    ap.add_argument("--no-reuse-memory", action="store_true", help="fast path without reuse_freed_memory()")
    ap.add_argument("--json", type=Path, help="also write all results here")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    image = read_image(FRAME).pixels if FRAME.exists() else None
    cases = []
    for name in args.variants.split(","):
        v = get_variant(name)
        cases.append(BenchCase(random_model(v.num_res), v, width, height))
    compile = (False, True) if args.compile else None
    run = RunSettings(device=args.device, tile=0, reuse_memory=not args.no_reuse_memory)
    rows = bench_suite(cases, run, warmup=args.warmup, iters=args.iters, image=image, compile=compile)
    frame = FRAME.name if image is not None else "noise"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, frame: {frame}")
    print(
        "| variant | path | ms/frame (median) | p90 | frames/s | TFLOP/s | peak MB | speed-up | rel. error | PSNR dB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        path = "eager fp32 NCHW" if r.mode == "baseline" else f"{r.precision} {'NHWC' if r.channels_last else 'NCHW'}"
        path += " compiled" if r.compiled else ""
        path += " reuse-memory" if r.reuse_memory else ""
        print(
            f"| {r.variant} | {path} | {r.median_ms:.0f} | {r.p90_ms:.0f} | {r.fps:.3f} | {r.tflops:.3f} | "
            f"{r.peak_memory_mb:.0f} | {r.speedup or 1:.2f}x | "
            f"{'-' if r.rel_error is None else f'{r.rel_error:.1e}'} | "
            f"{'-' if r.psnr_db is None else f'{r.psnr_db:.1f}'} |"
        )
        if r.compiled:
            print(f"|  | (warm-up incl. compile: {r.warmup_seconds:.1f} s) | | | | | | | | |")
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in rows], indent=1))


if __name__ == "__main__":
    main()
