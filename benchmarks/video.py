"""End-to-end `mimo video` throughput on the real REDS clip (../shared/data/video).

    python benchmarks/video.py                      # MIMO-UNet, first 12 frames, mimo video's defaults
    python benchmarks/video.py --seconds 2 --variant plus --device cuda --precision bf16
    python benchmarks/video.py --precision fp32 --no-channels-last --compile off --no-reuse-memory

The same figures come from: mimo bench --video CLIP --variant base --duration 0.5

Speed does not depend on the weights' values, so without --weights the network gets random
weights of the chosen variant. Prints frames/s end to end and the seconds spent decoding,
in inference and encoding (the three overlap, so they can add up to more than the total).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from mimocli.arch import MIMOUNet
from mimocli.device import freed_memory_reused, reuse_freed_memory
from mimocli.engine import Deblurrer
from mimocli.registry import get_variant
from mimocli.video import VideoOptions, deblur_video
from mimocli.weights import load_model

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "video" / "reds_020_blur_48f.mp4"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, default=CLIP)
    ap.add_argument("--variant", default="base")
    ap.add_argument("--weights")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--tile", default="auto")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--no-reuse-memory", action="store_true")
    ap.add_argument(
        "--seconds", type=float, default=0.5, help="length of the clip to process (24 fps: 0.5 s = 12 frames)"
    )
    args = ap.parse_args()

    v = get_variant(args.variant)
    if args.weights:
        model = load_model(v.name, "cpu", args.weights)
    else:
        torch.manual_seed(0)
        model = MIMOUNet(v.num_res)
    tile: int | str = int(args.tile) if args.tile.isdigit() else args.tile
    compile: bool | str = {"auto": "auto", "on": True, "off": False}[args.compile]
    channels_last = False if args.no_channels_last else None
    deblurrer = Deblurrer(
        model,
        device=args.device,
        precision=args.precision,
        tile=tile,
        channels_last=channels_last,
        compile=compile,
        batch=args.batch,
    )
    if deblurrer.device.type == "cpu" and not args.no_reuse_memory:
        reuse_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        summary = deblur_video(
            args.input,
            Path(tmp) / "out.mp4",
            deblurrer,
            VideoOptions(end=args.seconds),
        )
    record = {
        "variant": v.name,
        "device": str(deblurrer.device),
        "precision": str(deblurrer.dtype).removeprefix("torch."),
        "tile": deblurrer.tile,
        **deblurrer.settings,
        "reuse_memory": freed_memory_reused(),
        "threads": torch.get_num_threads(),
        **{k: summary.to_dict()[k] for k in ("frames", "width", "height", "seconds", "fps")},
        "decode_s": round(summary.decode_seconds, 2),
        "infer_s": round(summary.infer_seconds, 2),
        "encode_s": round(summary.encode_seconds, 2),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
