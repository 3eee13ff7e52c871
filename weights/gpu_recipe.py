"""Turn minutes of a GPU into a model: race a few MIMO-UNet shapes, train the winner, hand back
weights, metrics and the curve. Run through ``weights/gpu_recipe.sh`` (README, "Training").

    weights/gpu_recipe.sh OUT [--minutes 8] [--device cuda] [--pack .pack/sharp.zip] [--init WEIGHTS]

Needs nothing from the network: torch, numpy, OpenCV, Pillow and safetensors, which a CUDA image
has, and the packed photos (``weights/pack_photos.py``; made on the spot from
``../shared/data/sharp`` when no pack is given and the photos are there).

The whole run keeps to ``--minutes`` of wall time:
1. The race, a fifth of the time: each candidate shape (MIMO-UNet, 8 blocks x 32 channels; one
   between it and lite; lite, 4 x 16) trains from scratch for the same wall time at a constant
   learning rate and is scored on the validation split. The best PSNR per GPU-minute wins; its
   speed (steps per second) sets how many steps the rest of the time holds, measured once and
   recorded.
2. The winner continues from its race weights on a cosine schedule over those steps, validating
   and checkpointing about once a minute; the best validation so far is in OUT as fp16
   safetensors at every moment, so a run cut short still hands back a model.

With ``--init WEIGHTS`` (an earlier run's model.safetensors) there is no race: that shape goes on
from those weights (its first slice only measures its speed), so the minutes of several runs add up.

Everything trains with the camera shake rendered on the device (``mimo train --shake``), bf16
autocast on GPUs that have it, channels-last. ``torch.compile`` is left off below 20 minutes,
by estimate rather than measurement: its compile of a MIMO-UNet's forward and backward takes on
the order of a minute, and in the first H100 run (weights/README.md) the steps waited on the
shake renderer, not on the network, so a faster network would not have shortened them.

OUT gets: model.safetensors (fp16, the best validation), metrics.jsonl (the winner's run),
curve.png, recipe.json (device, race, choices, figures); the runs themselves are in --work.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from mimocli.arch import MIMOUNet
from mimocli.atomic import write_bytes_atomic
from mimocli.checkpoints import read_state_dict
from mimocli.downloads import sha256_file
from mimocli.registry import architecture_of
from mimocli.train import TrainOptions, plot_history, train
from mimocli.train_data import pack_photos

ROOT = Path(__file__).resolve().parents[1]
RACE_SHARE = 0.2  # of the minutes, split evenly between the candidates
RESERVE_S = 20.0  # for the last validation, the export and the files (seconds)
COMPILE_FROM_MINUTES = 20.0


@dataclass(frozen=True)
class Shape:
    name: str
    num_res: int
    base_channel: int


CANDIDATES = {
    "mimo-unet": Shape("mimo-unet", 8, 32),
    "mimo-unet-6x24": Shape("mimo-unet-6x24", 6, 24),
    "mimo-unet-lite": Shape("mimo-unet-lite", 4, 16),
}


def half(src: Path, dst: Path) -> None:
    """A trained export as fp16 safetensors (what mimocli ships: half the bytes, same outputs to
    a few levels)."""
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(src)).items()}
    write_bytes_atomic(dst, save(tensors, metadata={"format": "pt", "producer": "mimocli gpu_recipe"}))


class Mirror:
    """Copies the run's best weights (fp16) and metrics into OUT as they change, so that a run
    killed at any moment has handed back its best model so far."""

    def __init__(self, run: Path, out: Path, every_s: float = 15.0):
        self.run, self.out, self.every_s = run, out, every_s
        self.last_copy = 0.0
        self.seen = 0.0

    def __call__(self, *_: object) -> None:
        now = time.perf_counter()
        if now - self.last_copy >= self.every_s:
            self.sync()
            self.last_copy = now

    def sync(self) -> None:
        best = self.run / "best.safetensors"
        if best.exists() and best.stat().st_mtime != self.seen:
            self.seen = best.stat().st_mtime
            half(best, self.out / "model.safetensors")
        metrics = self.run / "metrics.jsonl"
        if metrics.exists():
            write_bytes_atomic(self.out / "metrics.jsonl", metrics.read_bytes())


def warm_up(model: torch.nn.Module, batch: int, crop: int, dev: torch.device) -> float:
    """Seconds of a few forward and backward passes on a random batch, off the race's clock: the
    device's start (CUDA context, cuDNN's choice of kernels per shape) would otherwise be charged
    to whichever candidate runs first."""
    t = time.perf_counter()
    model = model.to(dev).to(memory_format=torch.channels_last).train()  # type: ignore[call-overload]
    x = torch.rand(batch, 3, crop, crop, device=dev).contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = sum(o.float().mean() for o in model(x))
        loss.backward()  # type: ignore[union-attr]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def speed(history: list[dict]) -> float | None:
    """Steps per second while training, from the logged records (loading the photos before the
    first step and the validation after the last left out); None with too few records."""
    logged = [h for h in history if "loss" in h and "val_psnr" not in h]
    if len(logged) < 2 or logged[-1]["seconds"] <= logged[0]["seconds"]:
        return None
    return (logged[-1]["step"] - logged[0]["step"]) / (logged[-1]["seconds"] - logged[0]["seconds"])


def find_pack(given: Path | None, work: Path) -> Path:
    if given:
        if not given.is_file():
            sys.exit(f"Error: {given}: no such pack; make one with weights/pack_photos.py")
        return given
    if (ROOT / ".pack/sharp.zip").is_file():
        return ROOT / ".pack/sharp.zip"
    sharp = ROOT.parent / "shared/data/sharp"
    if sharp.is_dir():
        return Path(pack_photos([sharp], work / "sharp.zip").path)
    sys.exit("Error: no photos to train on; pass --pack PACK (weights/pack_photos.py makes one)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--minutes", type=float, default=8.0, help="wall time of the whole run")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--pack", type=Path, help="packed photos (default: .pack/sharp.zip, else made on the spot)")
    ap.add_argument("--work", type=Path, help="where the runs go (default: OUT/work)")
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument(
        "--init",
        type=Path,
        help="continue these weights (an earlier run's model.safetensors) instead of racing shapes from scratch: "
        "GPU minutes add up across runs",
    )
    ap.add_argument("--batch", type=int, help="crops per step (default: 16 on a GPU, 2 on the CPU)")
    ap.add_argument("--crop", type=int, help="crop side (default: 256 on a GPU, 64 on the CPU)")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    started = time.perf_counter()
    deadline = started + args.minutes * 60
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("Error: no CUDA device here; pass --device cpu for a toy run")
    gpu = dev.type != "cpu"
    torch.backends.cudnn.benchmark = True  # fixed crop shapes: let cuDNN pick its fastest kernels once
    batch = args.batch or (16 if gpu else 2)
    crop = args.crop or (256 if gpu else 64)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or out / "work"
    work.mkdir(parents=True, exist_ok=True)
    pack = find_pack(args.pack, work)
    use_compile = args.minutes >= COMPILE_FROM_MINUTES
    record: dict = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or dev.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "minutes": args.minutes,
        "pack": {"path": str(pack), "sha256": sha256_file(pack), "bytes": pack.stat().st_size},
        "batch": batch,
        "crop": crop,
        "lr": args.lr,
        "seed": args.seed,
        "bf16": dev.type == "cuda" and torch.cuda.is_bf16_supported(),
        "channels_last": True,
        "compile": use_compile,
        "compile_why": f"on from {COMPILE_FROM_MINUTES:g} minutes (an estimate: see the recipe's docstring)",
        "race": [],
    }

    def write_record() -> None:
        record["seconds"] = round(time.perf_counter() - started, 1)
        write_bytes_atomic(out / "recipe.json", (json.dumps(record, indent=1) + "\n").encode())

    def options(steps: int, schedule: str, every: int) -> TrainOptions:
        return TrainOptions(
            steps=steps,
            batch=batch,
            crop=crop,
            lr=args.lr,
            lr_halve_epochs=10**9,  # the race: a constant rate
            seed=args.seed,
            checkpoint_every=every,
            val_every=every,
            log_every=10,
            shake=True,
            shake_on="device",
            schedule=schedule,
        )

    candidates = dict(CANDIDATES)
    start_from: dict[str, torch.Tensor] | None = None
    if args.init:  # one entry, the given weights: its "race" only measures its speed, and it goes on from there
        start_from = read_state_dict(args.init)
        num_res, width = architecture_of(start_from)
        candidates = {"init": Shape(f"mimo-unet-{num_res}x{width}", num_res, width)}
        record["init"] = {
            "path": str(args.init),
            "sha256": sha256_file(args.init),
            "num_res": num_res,
            "base_channel": width,
        }
    names = list(candidates) if args.init else args.candidates
    # each candidate's warm-up (a few seconds) comes out of the time left, not out of its race
    race_s = (deadline - time.perf_counter()) * RACE_SHARE / len(names)
    for name in names:
        shape = candidates[name]
        torch.manual_seed(args.seed)
        model = MIMOUNet(shape.num_res, shape.base_channel)
        if start_from is not None:
            model.load_state_dict({k: v.float() for k, v in start_from.items()})
        warm_s = warm_up(MIMOUNet(shape.num_res, shape.base_channel), batch, crop, dev)
        run = work / f"race-{shape.name}"
        s = train(model, [pack], run, options(10**9, "step", 10**9), args.device, time_limit=race_s)
        per_s = speed(s.history) or s.steps / s.seconds
        record["race"].append(
            {
                "name": shape.name,
                "num_res": shape.num_res,
                "base_channel": shape.base_channel,
                "parameters": sum(p.numel() for p in model.parameters()),
                "steps": s.steps,
                "seconds": round(s.seconds, 1),
                "warm_up_s": round(warm_s, 1),
                "steps_per_s": round(per_s, 3),
                "crops_per_s": round(per_s * batch, 1),
                "val_psnr": s.val_psnr,
            }
        )
        write_record()
    # equal wall time each: the best validation PSNR is the best per GPU-minute
    winner = max(record["race"], key=lambda r: r["val_psnr"] or -math.inf)
    record["winner"] = winner["name"]
    left = deadline - time.perf_counter() - RESERVE_S
    # the winner's race speed sets the steps of the rest: measured once, recorded, not re-decided
    steps = max(1, int(winner["steps_per_s"] * left))
    every = max(1, int(winner["steps_per_s"] * 60))  # about a minute
    record["final"] = {"steps_planned": steps, "validate_every": every, "seconds_planned": round(left, 1)}
    write_record()
    shape = next(c for c in candidates.values() if c.name == winner["name"])
    model = MIMOUNet(shape.num_res, shape.base_channel)
    model.load_state_dict(load_file(str(work / f"race-{shape.name}" / "model.safetensors")))
    if use_compile:
        model.compile()
    run = work / "final"
    mirror = Mirror(run, out)
    s = train(model, [pack], run, options(steps, "cosine", every), args.device, on_progress=mirror, time_limit=left)
    mirror.sync()
    if not (out / "model.safetensors").exists():  # no validation split: the last weights
        half(run / "model.safetensors", out / "model.safetensors")
    plot_history(s.history, out / "curve.png")
    record["final"].update(
        {
            "steps": s.steps,
            "seconds": round(s.seconds, 1),
            "crops_per_s": round(s.steps * batch / s.seconds, 1),
            "val_psnr": s.val_psnr,
            "best_val_psnr": s.best_val_psnr,
            "summary": {k: v for k, v in asdict(s).items() if k != "history"},
        }
    )
    write_record()
    print(json.dumps({"winner": record["winner"], **record["final"]}, default=str))  # noqa: T201


if __name__ == "__main__":
    main()
