"""Quality of trained weights, measured offline: what random weights could not tell.

    python benchmarks/lite_quality.py --variant lite --shared ../shared --testset /tmp/testset

For the given weights (default: the bundled mimo-unet-lite), on CPU, in one run:
- PSNR/SSIM on each real GoPro pair in SHARED/data/pairs against the blurry input's;
- mean PSNR on the synthetic held-out test set (made by
  `mimo synth --shake SHARED/data/sharp TESTSET --split test --vary`) against the blurry input's,
  and the mean gain by length of the camera shake (from the records synth writes beside each pair);
- tiled (256 px tiles, 64 px overlap) against whole-image PSNR on the pairs;
- bf16 against fp32 (PSNR of each against the sharp image, and the largest pixel difference);
- the self-ensemble's gain (MIMO-UNet++ style, 8 flips/rotations) on the pairs;
- frame-to-frame flicker on the real blurry video SHARED/data/video/*.mp4: the mean absolute
  change between consecutive frames of the output, against the input's, and the mean absolute
  change of the output's temporal difference from the input's (what deblurring added over time).
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import av
import numpy as np

from mimocli.device import reuse_freed_memory
from mimocli.engine import Deblurrer
from mimocli.evaluate import evaluate_pair, find_pairs, psnr, ssim
from mimocli.images import read_image
from mimocli.pixels import rgb8
from mimocli.weights import load_weights


def pair_scores(pairs, deblurrer: Deblurrer) -> list[dict]:
    out = []
    for p in pairs:
        r = evaluate_pair(p, deblurrer)
        out.append(
            {
                "name": p.name,
                "psnr": round(r.psnr, 3),
                "blur_psnr": round(r.blur_psnr, 3),
                "gain_db": round(r.psnr - r.blur_psnr, 3),
                "ssim": round(r.ssim, 4),
                "blur_ssim": round(r.blur_ssim, 4),
            }
        )
    return out


SHAKE_BINS = ((0.0, 8.0), (8.0, 16.0), (16.0, float("inf")))  # camera path length, pixels


def by_shake(testset: Path, pairs, records) -> list[dict]:
    """Mean gain per bin of shake length, from the records `mimo synth --shake` writes beside each
    pair's kernel (TESTSET/kernel/NAME.json); empty for a test set made without them."""
    rows = []
    lengths = {}
    for p in pairs:
        f = testset / "kernel" / f"{Path(p.name).stem}.json"
        if f.exists():
            lengths[p.name] = json.loads(f.read_text())["length"]
    for lo, hi in SHAKE_BINS:
        inside = [r for p, r in zip(pairs, records, strict=True) if lo <= lengths.get(p.name, -1) < hi]
        if inside:
            rows.append(
                {
                    "shake_px": f"{lo:g}-{hi:g}" if hi != float("inf") else f">={lo:g}",
                    "count": len(inside),
                    "blur_psnr": round(statistics.fmean(r.blur_psnr for r in inside), 3),
                    "psnr": round(statistics.fmean(r.psnr for r in inside), 3),
                    "gain_db": round(statistics.fmean(r.psnr - r.blur_psnr for r in inside), 3),
                }
            )
    return rows


def outputs(pairs, deblurrer: Deblurrer) -> list[np.ndarray]:
    return [deblurrer(rgb8(read_image(p.blur).pixels)).image for p in pairs]


def flicker(video: Path, deblurrer: Deblurrer, limit: int) -> dict:
    with av.open(str(video)) as f:
        frames = [fr.to_ndarray(format="rgb24") for _, fr in zip(range(limit), f.decode(video=0), strict=False)]
    deblurred = [deblurrer.deblur_batch(fr[None])[-1][0] for fr in frames]
    inp = np.stack(frames).astype(np.float64)
    out = np.stack(deblurred).astype(np.float64)
    d_in, d_out = np.diff(inp, axis=0), np.diff(out, axis=0)
    return {
        "frames": len(frames),
        "input_mean_abs_change": round(float(np.abs(d_in).mean()), 3),
        "output_mean_abs_change": round(float(np.abs(d_out).mean()), 3),
        "added_temporal_change": round(float(np.abs(d_out - d_in).mean()), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="lite")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--testset", type=Path, default=None)
    ap.add_argument("--video-frames", type=int, default=48)
    ap.add_argument("--skip", nargs="*", default=[], help="parts to skip: tiles bf16 ensemble video testset")
    args = ap.parse_args()
    reuse_freed_memory()
    loaded = load_weights(None if args.weights else args.variant, "cpu", args.weights)  # a file: what it holds
    model = loaded.model
    report: dict = {"weights": loaded.to_dict()}
    started = time.perf_counter()
    plain = Deblurrer(model, device="cpu", precision="fp32", tile=0)
    pairs = find_pairs(args.shared / "data" / "pairs")
    report["pairs"] = pair_scores(pairs, plain)
    report["pairs_all_better"] = all(r["gain_db"] > 0 for r in report["pairs"])
    if args.testset and "testset" not in args.skip:
        test = [evaluate_pair(p, plain) for p in find_pairs(args.testset)]
        report["testset"] = {
            "count": len(test),
            "psnr": round(statistics.fmean(r.psnr for r in test), 3),
            "blur_psnr": round(statistics.fmean(r.blur_psnr for r in test), 3),
            "ssim": round(statistics.fmean(r.ssim for r in test), 4),
            "blur_ssim": round(statistics.fmean(r.blur_ssim for r in test), 4),
        }
        report["testset"]["gain_db"] = round(report["testset"]["psnr"] - report["testset"]["blur_psnr"], 3)
        report["testset_by_shake"] = by_shake(args.testset, find_pairs(args.testset), test)
    sharp = [rgb8(read_image(p.sharp).pixels) for p in pairs]
    whole = outputs(pairs, plain)
    if "tiles" not in args.skip:
        tiled = outputs(pairs, Deblurrer(model, device="cpu", precision="fp32", tile=256, tile_overlap=64))
        report["tiled_vs_whole"] = [
            {
                "name": p.name,
                "whole_psnr": round(psnr(w, s), 3),
                "tiled_psnr": round(psnr(t, s), 3),
                "tiled_vs_whole_psnr": round(psnr(t, w), 2),
                "max_abs_diff": int(np.abs(t.astype(int) - w.astype(int)).max()),
            }
            for p, w, t, s in zip(pairs, whole, tiled, sharp, strict=True)
        ]
    if "bf16" not in args.skip:
        bf16 = outputs(pairs, Deblurrer(model, device="cpu", precision="bf16", tile=0))
        report["bf16_vs_fp32"] = [
            {
                "name": p.name,
                "fp32_psnr": round(psnr(w, s), 3),
                "bf16_psnr": round(psnr(b, s), 3),
                "max_abs_diff": int(np.abs(b.astype(int) - w.astype(int)).max()),
            }
            for p, w, b, s in zip(pairs, whole, bf16, sharp, strict=True)
        ]
    if "ensemble" not in args.skip:
        ens = outputs(pairs, Deblurrer(model, device="cpu", precision="fp32", tile=0, ensemble=True))
        report["ensemble"] = [
            {
                "name": p.name,
                "plain_psnr": round(psnr(w, s), 3),
                "ensemble_psnr": round(psnr(e, s), 3),
                "gain_db": round(psnr(e, s) - psnr(w, s), 3),
                "ssim_gain": round(ssim(e, s) - ssim(w, s), 4),
            }
            for p, w, e, s in zip(pairs, whole, ens, sharp, strict=True)
        ]
    if "video" not in args.skip:
        clips = sorted((args.shared / "data" / "video").glob("*.mp4"))
        if clips:
            report["video_flicker"] = {"clip": clips[0].name, **flicker(clips[0], plain, args.video_frames)}
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
