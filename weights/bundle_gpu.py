"""Ship what weights/gpu_recipe.sh handed back as a bundled variant (maintainers only).

    python weights/bundle_gpu.py OUT --key mimo-unet-mid --data ../shared/data/sharp

OUT is the recipe's output folder (model.safetensors, metrics.jsonl, curve.png, recipe.json);
KEY a row of weights/registry.json whose num_res and base_channel the weights must have. Before
anything is written, the new weights and the bundled mimo-unet-lite are scored on the same
validation crops of --data (the original photos' validation split, at the recipe's crop size
and at lite's own 128 px), and nothing ships unless the new weights are better on both.
Then: mimocli/bundled/KEY.safetensors (fp16, with its provenance in the metadata), its size and
sha256 in the registry, and weights/KEY_{metrics.jsonl,curve.png,recipe.json} beside the card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from mimocli.atomic import write_bytes_atomic
from mimocli.checkpoints import build_model, read_state_dict
from mimocli.registry import architecture_of
from mimocli.shake import split_of
from mimocli.train import VAL_CROPS, VAL_SHAKE, validate
from mimocli.train_data import ShakeData, find_photos

ROOT = Path(__file__).resolve().parents[1]


def val_psnr(models: list[torch.nn.Module], data: Path, crop: int) -> list[float]:
    """Validation PSNR of each model on the same fixed shaken crops of the validation photos."""
    photos = [p for p in find_photos([data]) if split_of(p) == "val"]
    shaken = ShakeData(photos, crop, VAL_SHAKE)
    pairs = shaken.fixed(VAL_CROPS)
    shaken.close()
    return [validate(m, pairs, torch.device("cpu"), True) for m in models]  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the recipe's output folder")
    ap.add_argument("--key", required=True, help="the registry row to ship as")
    ap.add_argument("--data", type=Path, required=True, help="the sharp photos (their validation split)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout to ship into (default: this one)")
    args = ap.parse_args()
    root = args.root
    registry_path = root / "weights" / "registry.json"
    registry = json.loads(registry_path.read_text())
    row = registry.get(args.key)
    if row is None:
        raise SystemExit(f"{args.key}: no such row in {registry_path}; add it first")
    sd = load_file(str(args.out / "model.safetensors"))
    if architecture_of(sd) != (row["num_res"], row["base_channel"]):
        raise SystemExit(f"{args.out}: holds {architecture_of(sd)}, not {args.key}'s")
    recipe = json.loads((args.out / "recipe.json").read_text())
    mine, _ = build_model({k: t.float() for k, t in sd.items()})
    lite, _ = build_model(read_state_dict(root / "mimocli" / "bundled" / "mimo-unet-lite.safetensors"))
    scores = {}
    for crop in sorted({recipe["crop"], 128}):
        lite_db, mine_db = val_psnr([lite, mine], args.data, crop)
        scores[crop] = {"mimo-unet-lite": round(lite_db, 3), args.key: round(mine_db, 3)}
        print(f"validation crops of {crop} px: mimo-unet-lite {lite_db:.3f} dB, {args.key} {mine_db:.3f} dB")
        if mine_db <= lite_db:
            raise SystemExit(f"{args.out}: no better than mimo-unet-lite on the {crop} px validation crops")
    history = [json.loads(x) for x in (args.out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    best = max((h for h in history if "val_psnr" in h), key=lambda h: h["val_psnr"])
    meta = {
        "format": "pt",
        "architecture": "MIMOUNet",
        "num_res": str(row["num_res"]),
        "base_channel": str(row["base_channel"]),
        "producer": "weights/gpu_recipe.sh",
        "device": recipe["device"],
        "gpu_minutes": f"{recipe['seconds'] / 60:.2f}",
        "step": str(best["step"]),
        "val_psnr": f"{best['val_psnr']:.3f}",
    }
    blob = save({k: t.to(torch.float16).contiguous() for k, t in sd.items()}, metadata=meta)
    dest = root / "mimocli" / "bundled" / f"{args.key}.safetensors"
    write_bytes_atomic(dest, blob)
    row["size"] = len(blob)
    row["sha256"] = hashlib.sha256(blob).hexdigest()
    row["training"] = {k: meta[k] for k in ("device", "gpu_minutes", "step", "val_psnr")}
    write_bytes_atomic(registry_path, (json.dumps(registry, indent=2) + "\n").encode())
    for name in ("metrics.jsonl", "curve.png", "recipe.json"):
        shutil.copyfile(args.out / name, root / "weights" / f"{args.key}_{name}")
    validation = {"crops": VAL_CROPS, "by_crop_px": scores}
    (root / "weights" / f"{args.key}_validation.json").write_text(json.dumps(validation, indent=1) + "\n")
    print(f"{dest}: step {best['step']}, val {best['val_psnr']:.3f} dB, {len(blob) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
