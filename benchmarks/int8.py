"""int8 against the eager fp32 baseline and the float fast path, in one run, at 1280x720.

    python benchmarks/int8.py [--variants base,lite] [--iters 3]

Random weights for MIMO-UNet (the cost is the published one's), the bundled weights for lite;
the int8 model is calibrated on the image shipped for it. Prints a markdown table: ms per frame
(median), speed-up over the baseline and over the float fast path, the share of this machine's
convolution ceiling in that precision (mimocli.ceiling, TFLOP/s or TOP/s), and the PSNR against
the baseline's fp32 output.
"""

from __future__ import annotations

import argparse

import torch

from mimocli.bench import BenchCase, bench_baseline, bench_fast, random_model
from mimocli.device import reuse_freed_memory
from mimocli.registry import get_variant
from mimocli.settings import RunSettings
from mimocli.weights import load_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="base,plus,lite")
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 1280x720, median of {args.iters}")
    print("| variant | path | ms/frame | vs baseline | vs float path | of the conv ceiling | PSNR dB vs fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.variants.split(","):
        v = get_variant(name)
        model = load_weights(name, "cpu").model if v.name == "mimo-unet-lite" else random_model(v.num_res)
        case = BenchCase(model, v, 1280, 720)
        base = bench_baseline(case, "cpu", 1, 1, args.iters)
        reuse_freed_memory()
        fast = bench_fast(case, RunSettings(device="cpu", precision="fp32", tile=0), 1, args.iters, baseline=base)
        int8 = bench_fast(case, RunSettings(device="cpu", precision="int8", tile=0), 1, args.iters, baseline=base)
        rows = (("eager fp32 NCHW (baseline)", base.result), ("fp32 NHWC, reused memory", fast), ("int8", int8))
        for path, r in rows:
            over_fast = fast.median_ms / r.median_ms
            psnr = "-" if r.psnr_db is None else f"{r.psnr_db:.1f}"
            peak = f"{r.tflops / r.ceiling_tflops:.0%} of {r.ceiling_tflops:.3f}" if r.ceiling_tflops else "-"
            print(
                f"| {v.name} | {path} | {r.median_ms:.0f} | {base.result.median_ms / r.median_ms:.2f}x | "
                f"{over_fast:.2f}x | {peak} | {psnr} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
