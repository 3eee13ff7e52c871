"""Ship a training run's best weights as mimocli's bundled mimo-unet-lite (maintainers only).

    python weights/bundle.py RUN_DIR

A later session starts from the shipped weights and continues the curve:

    mimo train SHARP --shake --variant lite --init mimocli/bundled/mimo-unet-lite.safetensors --out RUN ...
    python weights/bundle.py RUN --init-run weights/lite_metrics.jsonl --data SHARP

Reads RUN_DIR/best.safetensors (the export at the best validation PSNR) and RUN_DIR/metrics.jsonl.
With --data (the sharp photos the run trained on), the shipped model and the run's best are first
scored on the same validation crops, those of the run's own crop size (a run's validation PSNRs
are comparable only among themselves), and nothing is shipped unless the run's best is better.
It then
writes the weights as fp16 safetensors to mimocli/bundled/mimo-unet-lite.safetensors, pins their
size and sha256 in weights/registry.json, and commits-ready copies of the training curve:
weights/lite_metrics.jsonl and weights/lite_curve.png (validation PSNR against steps and CPU-hours).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save

from mimocli.atomic import write_bytes_atomic
from mimocli.registry import architecture_of, get_variant

ROOT = Path(__file__).resolve().parents[1]
KEY = "mimo-unet-lite"


def curve(history: list[dict], path: Path, width: int = 900, height: int = 420, stages: tuple[int, ...] = ()) -> None:
    """Validation PSNR against steps (bottom axis) and CPU-hours (top axis); a dashed line at each
    step in ``stages`` where a stage with another validation set (crop size) begins."""
    vals = [(h["step"], h.get("cpu_seconds", 0.0) / 3600, h["val_psnr"]) for h in history if "val_psnr" in h]
    timed = [{"step": 0, "cpu_seconds": 0.0}] + [h for h in history if "cpu_seconds" in h]
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 70, width - 30, 40, height - 50
    d.rectangle([left, top, right, bottom], outline="black")
    if vals:
        s0, s1 = 0, max(v[0] for v in vals)
        lo, hi = min(v[2] for v in vals), max(v[2] for v in vals)
        lo, hi = lo - 0.1, hi + 0.1
        pts = [
            (left + (s - s0) / max(s1 - s0, 1) * (right - left), bottom - (p - lo) / (hi - lo) * (bottom - top))
            for s, _, p in vals
        ]
        if len(pts) > 1:
            d.line(pts, fill="darkorange", width=2)
        for x, y in pts:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill="darkorange")
        for step in stages:
            x = left + (step - s0) / max(s1 - s0, 1) * (right - left)
            for y in range(top, bottom, 8):
                d.line([(x, y), (x, y + 4)], fill="gray")
            d.text((x + 4, bottom - 18), "new stage: its own validation crops", fill="gray")
        for frac in (0, 0.25, 0.5, 0.75, 1):
            x = left + frac * (right - left)
            step = s0 + frac * (s1 - s0)
            hours = float(np.interp(step, [h["step"] for h in timed], [h["cpu_seconds"] / 3600 for h in timed]))
            d.text((x - 15, bottom + 8), f"{step:.0f}", fill="black")
            d.text((x - 15, top - 16), f"{hours:.2f} h", fill="gray")
        for frac in (0, 0.5, 1):
            y = bottom - frac * (bottom - top)
            d.text((8, y - 6), f"{lo + frac * (hi - lo):.2f} dB", fill="black")
        d.text((left + 8, top + 6), f"validation PSNR: {vals[0][2]:.2f} -> {vals[-1][2]:.2f} dB", fill="darkorange")
    d.text((width // 2 - 60, height - 22), "step (bottom) / CPU-hours (top)", fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    write_bytes_atomic(path, buf.getvalue())


def compare(run: Path, candidate: dict[str, torch.Tensor], data: Path) -> tuple[float, float]:
    """Validation PSNR of the shipped model and of ``candidate`` on the run's own validation crops."""
    from mimocli.checkpoints import build_model, read_state_dict
    from mimocli.shake import split_of
    from mimocli.train import VAL_CROPS, VAL_SHAKE, validate
    from mimocli.train_data import ShakeData, find_photos

    crop = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["options"]["crop"]
    photos = [p for p in find_photos([data]) if split_of(p) == "val"]
    shaken = ShakeData(photos, crop, VAL_SHAKE)
    pairs = shaken.fixed(VAL_CROPS)
    shaken.close()
    shipped, _ = build_model(read_state_dict(ROOT / "mimocli" / "bundled" / f"{KEY}.safetensors"))
    mine, _ = build_model({k: t.float() for k, t in candidate.items()})
    cpu = torch.device("cpu")
    return validate(shipped, pairs, cpu, True), validate(mine, pairs, cpu, True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="the training run folder (mimo train --out)")
    ap.add_argument(
        "--init-run",
        type=Path,
        help="where RUN's --init weights came from: a run folder (its steps and CPU time are added) or a "
        "metrics file this script wrote before, such as weights/lite_metrics.jsonl (prepended whole)",
    )
    ap.add_argument("--data", type=Path, help="the sharp photos (their validation split): compared with the shipped")
    args = ap.parse_args()
    sd = load_file(str(args.run / "best.safetensors"))
    v = get_variant(KEY)
    if architecture_of(sd) != (v.num_res, v.base_channel):
        raise SystemExit(f"{args.run}: holds {architecture_of(sd)}, not {KEY}'s {(v.num_res, v.base_channel)}")
    if args.data:
        shipped, candidate = compare(args.run, sd, args.data)
        print(f"validation crops of the run: shipped {shipped:.3f} dB, run's best {candidate:.3f} dB")
        if candidate <= shipped:
            raise SystemExit(f"{args.run}: its best ({candidate:.3f} dB) is no better than the shipped model")
    history = [json.loads(x) for x in (args.run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    n_run = len(history)
    if args.init_run:  # count the steps and CPU time that made the starting weights
        file = args.init_run if args.init_run.is_file() else args.init_run / "metrics.jsonl"
        before = [json.loads(x) for x in file.read_text().splitlines() if x.strip()]
        # RUN started from the weights exported at the best validation: its steps count on from
        # that step, its CPU time from all the time spent before (the steps after the best too).
        # Only the last stage's validations compare with each other (each stage has its own crops).
        last = max((i for i, h in enumerate(before) if h.get("stage")), default=0)
        start = max((h for h in before[last:] if "val_psnr" in h), key=lambda h: h["val_psnr"])["step"]
        steps, cpu = start, before[-1].get("cpu_seconds", 0.0)
        history = [{**h, "step": h["step"] + steps, "cpu_seconds": h.get("cpu_seconds", 0.0) + cpu} for h in history]
        history[0] = {**history[0], "stage": True}  # a new stage: validated on its own crops
        if args.init_run.is_file():  # an earlier session of the same run: one curve
            history = [h for h in before if h["step"] <= start] + history
    run_steps = {h["step"] for h in history[len(history) - n_run :]}
    best = max((h for h in history if "val_psnr" in h and h["step"] in run_steps), key=lambda h: h["val_psnr"])
    meta = {
        "format": "pt",
        "architecture": "MIMOUNet",
        "num_res": str(v.num_res),
        "base_channel": str(v.base_channel),
        "producer": "mimocli train --shake",
        "step": str(best["step"]),
        "cpu_hours": f"{best.get('cpu_seconds', 0) / 3600:.2f}",
        "val_psnr": f"{best['val_psnr']:.3f}",
    }
    blob = save({k: t.to(torch.float16).contiguous() for k, t in sd.items()}, metadata=meta)
    dest = ROOT / "mimocli" / "bundled" / f"{KEY}.safetensors"
    dest.parent.mkdir(exist_ok=True)
    write_bytes_atomic(dest, blob)
    registry_path = ROOT / "weights" / "registry.json"
    registry = json.loads(registry_path.read_text())
    registry[KEY]["size"] = len(blob)
    registry[KEY]["sha256"] = hashlib.sha256(blob).hexdigest()
    registry[KEY]["training"] = {k: meta[k] for k in ("step", "cpu_hours", "val_psnr")}
    write_bytes_atomic(registry_path, (json.dumps(registry, indent=2) + "\n").encode())
    lines = "".join(json.dumps(h) + "\n" for h in history)
    write_bytes_atomic(ROOT / "weights" / "lite_metrics.jsonl", lines.encode())
    curve(history, ROOT / "weights" / "lite_curve.png", stages=tuple(h["step"] for h in history if h.get("stage")))
    print(f"{dest}: step {best['step']}, val {best['val_psnr']:.3f} dB, {len(blob) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
