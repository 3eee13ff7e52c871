"""Fine-tune or train MIMO-UNet on blurry/sharp pairs, as the paper trained it; never prints.

Defaults follow the paper: random 256x256 crops, batch 4, horizontal flips, Adam at 1e-4 halved
every 500 epochs, and the loss over the three scales

    L = sum_k L1(S^_k, S_k) + 0.1 * sum_k L1(FFT(S^_k), FFT(S_k)),

each L1 a mean over elements (the paper's division by t_k), the targets S_k downsampled the way
the network downsamples its input (nearest neighbour).

With ``shake``, the data are sharp photos (or a pack of them) and every crop gets a fresh random
camera shake (mimocli.shake): the photos of the validation split validate, those of the test split
are never read. The shake is drawn on the CPU and rendered where ``shake_on`` says: "device" with
torch on the training device (mimocli.shake_torch: a GPU renders its own batches), "workers" with
OpenCV in CPU threads while the step runs. On a CPU the two train equally fast (the network's
step dwarfs the render) but OpenCV renders a crop in about 2.6 times less CPU time
(benchmarks/shake_speed.py, train_speed.py), so "auto" keeps workers there and the device
elsewhere; the checkpoint records the choice.

Resumable: the batch of step s is drawn from a generator seeded by (seed, s), so a checkpoint
needs only the step, the weights and the states of the optimiser, the scheduler and (fp16 on
CUDA) the gradient scaler. On CPU a resumed run is bit for bit the run that was never stopped. On
CUDA it resumes from exactly that state, but cuDNN's backward kernels add in a varying order, so
the two runs drift apart in the last bits and agree only in their statistics. On CPU the model
trains channels-last (NHWC), which oneDNN runs about a fifth faster than NCHW.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image, ImageDraw
from safetensors.torch import save

from .arch import _down
from .atomic import atomic_write, write_bytes_atomic
from .checkpoints import Network
from .device import cuda_has_native_bf16, resolve_device
from .errors import ImageError, OutputError
from .evaluate import find_pairs, psnr, quantize
from .shake import ShakeModel, split_of
from .shake_torch import host_batch, render_crops
from .train_data import PairData, ShakeData, find_photos

StepFn = Callable[[int, int, float], None]  # step, steps, loss
# Options that change the numbers: a resumed run must keep them. --steps may grow; how often to
# log, validate and checkpoint may change.
SAME_ON_RESUME = (
    "batch",
    "crop",
    "lr",
    "lr_halve_epochs",
    "fft_weight",
    "flip",
    "seed",
    "mixed_precision",
    "shake",
    "channels_last",
    "max_blur",
    "shake_on",
    "schedule",
)
# What a run from before these options existed used.
LEGACY_OPTIONS = {"shake": False, "channels_last": False, "max_blur": 36.0, "shake_on": "workers", "schedule": "step"}
SHAKE_ON = ("auto", "device", "workers")
SCHEDULES = ("step", "cosine")
VAL_CROPS = 4  # fixed shaken crops per validation photo
# Validation crops are always blurred: a crop left sharp scores 40-50 dB, and a few of them would
# swing the mean PSNR more than the deblurring it is meant to follow.
VAL_SHAKE = ShakeModel(sharp=0.0, weak=0.0)


@dataclass(frozen=True)
class TrainOptions:
    steps: int = 3000
    batch: int = 4
    crop: int = 256
    lr: float = 1e-4
    lr_halve_epochs: int = 500
    fft_weight: float = 0.1
    flip: bool = True
    seed: int = 0
    checkpoint_every: int = 500
    val_every: int = 500
    log_every: int = 10
    mixed_precision: bool = True  # CUDA only: bf16 autocast (fp16 with loss scaling without bf16)
    shake: bool = False  # data are sharp photos, blurred afresh for every crop
    max_blur: float = 36.0  # with shake: the longest strong shake, pixels at the crop's scale
    channels_last: bool = True  # NHWC activations (CPU and CUDA)
    shake_on: str = "auto"  # with shake: where crops are rendered (SHAKE_ON); resolved when the run starts
    schedule: str = "step"  # "step": halve every lr_halve_epochs; "cosine": from lr down to lr/100 at `steps`


@dataclass
class TrainSummary:
    out: str
    steps: int
    resumed_from: int
    final_loss: float
    val_psnr: float | None
    weights: str
    seconds: float
    cpu_seconds: float = 0.0  # process CPU time over the whole run, resumes included
    best_val_psnr: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("history")
        return d


def loss_fn(outputs: list[torch.Tensor], sharp: torch.Tensor, fft_weight: float = 0.1) -> torch.Tensor:
    """MIMO-UNet's loss (the paper's): L1 plus ``fft_weight`` times the L1 of the 2-D spectra, at
    each of the three scales. outputs: [1/4, 1/2, full] predictions; sharp: (B,3,H,W) at full size."""
    targets = [_down(_down(sharp)), _down(sharp), sharp]
    content = sum(F.l1_loss(o.float(), t) for o, t in zip(outputs, targets, strict=True))
    spectral = sum(
        F.l1_loss(torch.view_as_real(torch.fft.rfft2(o.float())), torch.view_as_real(torch.fft.rfft2(t)))
        for o, t in zip(outputs, targets, strict=True)
    )
    return content + fft_weight * spectral  # type: ignore[return-value]


def image_loss(outputs: list[torch.Tensor], sharp: torch.Tensor, fft_weight: float = 0.1) -> torch.Tensor:
    """XYDeblur's loss (the authors' train.py): L1 between the deblurred image, the last output,
    and the sharp one; the two directional residuals are not supervised on their own, and there
    is no frequency term (``fft_weight`` is not used)."""
    return F.l1_loss(outputs[-1].float(), sharp)


def loss_for(model: torch.nn.Module) -> Callable[[list[torch.Tensor], torch.Tensor, float], torch.Tensor]:
    """The loss the paper of ``model``'s network trains it with: image_loss for XYDeblur (whose
    outputs are all full size), loss_fn for MIMO-UNet."""
    return image_loss if tuple(getattr(model, "output_scales", ())) == (1, 1, 1) else loss_fn


def validate(
    model: Network, pairs: list[tuple[np.ndarray, np.ndarray]], device: torch.device, channels_last: bool = False
) -> float:
    """Mean PSNR (8-bit, as mimo eval) of the model's full-scale output over whole images."""
    model.eval()
    scores = []
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.inference_mode():
        for blur, sharp in pairs:
            h, w = (blur.shape[0] // 4) * 4, (blur.shape[1] // 4) * 4
            x = torch.from_numpy(blur[:h, :w]).permute(2, 0, 1)[None].float().to(device) / 255
            x = x.contiguous(memory_format=fmt)
            scores.append(psnr(quantize(model(x)[2].float().cpu()), sharp[:h, :w]))
    model.train()
    return float(np.mean(scores))


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


def export_weights(model: Network, path: Path) -> Path:
    """The model's state dict as safetensors, in the authors' key names (mimo deblur --weights)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # NCHW, as published
    return write_bytes_atomic(path, save(tensors, metadata={"format": "pt", "producer": "mimocli train"}))


def plot_history(history: list[dict[str, Any]], path: Path, width: int = 800, height: int = 400) -> Path:
    """A PNG of the training loss (blue, log scale) and validation PSNR (orange) against steps."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 60, width - 60, 20, height - 40
    draw.rectangle([left, top, right, bottom], outline="black")
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h and h["loss"] > 0]
    vals = [(h["step"], h["val_psnr"]) for h in history if h.get("val_psnr") is not None]
    steps = [s for s, _ in losses + vals] or [0, 1]
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)

    def series(points: list[tuple[int, float]], colour: str, transform: Callable[[float], float], label: str) -> None:
        if not points:
            return
        ys = [transform(v) for _, v in points]
        lo, hi = min(ys), max(ys)
        hi = hi if hi > lo else lo + 1
        xy = [
            (left + (s - s0) / (s1 - s0) * (right - left), bottom - (y - lo) / (hi - lo) * (bottom - top))
            for (s, _), y in zip(points, ys, strict=True)
        ]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy if len(xy) < 50 else []:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        first, last = points[0][1], points[-1][1]
        where = (left + 5 if colour == "blue" else right - 200, top + 5)
        draw.text(where, f"{label}: {first:.4g} -> {last:.4g}", fill=colour)

    series(losses, "blue", lambda v: math.log10(v), "loss (log)")
    series(vals, "darkorange", lambda v: v, "val PSNR dB")
    draw.text((left, bottom + 10), f"step {s0}", fill="black")
    draw.text((right - 80, bottom + 10), f"step {s1}", fill="black")
    with atomic_write(path) as f:
        img.save(f, "PNG")
    return path


def train(
    model: Network,
    data: str | os.PathLike[str] | list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    options: TrainOptions = TrainOptions(),  # noqa: B008  (frozen)
    device: str = "auto",
    val: str | os.PathLike[str] | None = None,
    resume: bool = False,
    on_progress: StepFn | None = None,
    time_limit: float | None = None,
) -> TrainSummary:
    """Train ``model`` on the pairs under ``data`` (any layout mimo eval reads) into ``out``:
    checkpoint.pt every ``checkpoint_every`` steps, metrics.jsonl, loss.png, model.safetensors,
    and best.safetensors whenever the validation PSNR reaches a new high.

    With ``options.shake``, ``data`` is sharp photos (files or folders, descended into): the
    training split trains with a fresh shake per crop and, without ``val``, the validation split
    validates on fixed shaken crops (mimocli.shake.split_of; the test split is left out).
    With ``resume``, continue from out/checkpoint.pt, bit for bit as if never stopped.
    ``on_progress(step, steps, loss)`` gets the latest loss read: every step's on a CPU, on a GPU
    the one at the last log step (reading it every step would stall the device's queue).
    With ``time_limit`` (seconds from the call), the run ends after the step that crosses it, as
    if that step were the last (validated, checkpointed, exported); the summary says which step.
    Raises ImageError for bad data, OutputError for an output that holds another run.
    """
    started = time.perf_counter()
    dev = resolve_device(device)
    if options.shake_on not in SHAKE_ON or options.schedule not in SCHEDULES:
        raise ValueError(f"shake_on must be one of {SHAKE_ON} and schedule one of {SCHEDULES}")
    if options.shake_on == "auto":  # settled once, recorded in the checkpoint; a resumed run keeps it
        options = replace(options, shake_on="workers" if dev.type == "cpu" else "device")
    o = options
    out_dir = Path(out)
    ckpt_path, metrics_path = out_dir / "checkpoint.pt", out_dir / "metrics.jsonl"
    if ckpt_path.exists() and not resume:
        raise OutputError(f"{out_dir}: holds a training run", "pass --resume to continue it, or choose another --out")
    roots = [Path(d) for d in (data if isinstance(data, list) else [data])]
    pairs: PairData | ShakeData
    val_pairs: list[tuple[np.ndarray, np.ndarray]] = []
    if o.shake:
        photos = find_photos(roots)
        split = {p: split_of(p) for p in photos}
        train_photos = [p for p in photos if split[p] == "train"]
        if not train_photos:
            raise ImageError(f"{roots[0]}: no photos fall in the training split", "pass more photos")
        low = ShakeModel().length[0]
        pairs = ShakeData(train_photos, o.crop, replace(ShakeModel(), length=(min(low, o.max_blur), o.max_blur)))
        if not val and (val_photos := [p for p in photos if split[p] == "val"]):
            val_data = ShakeData(val_photos, o.crop, VAL_SHAKE)
            val_pairs = val_data.fixed(VAL_CROPS)
            val_data.close()
    else:
        if len(roots) != 1:
            raise ImageError(f"{roots[1]}: pairs come from one folder", "pass one folder of pairs, or shake photos")
        pairs = PairData(find_pairs(roots[0]), o.crop)
    if val:
        held_out = PairData(find_pairs(val), 0, cache=0)
        val_pairs = [held_out.load(i) for i in range(len(held_out))]
        held_out.close()
    out_dir.mkdir(parents=True, exist_ok=True)

    channels_last = o.channels_last and dev.type in ("cpu", "cuda")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(dev).to(memory_format=fmt).train()  # type: ignore[call-overload]
    optimiser = torch.optim.Adam(model.parameters(), lr=o.lr)
    compute_loss = loss_for(model)
    steps_per_epoch = max(1, math.ceil(len(pairs) / o.batch))
    scheduler: torch.optim.lr_scheduler.LRScheduler
    if o.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, o.steps) / o.steps))
        )
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=o.lr_halve_epochs * steps_per_epoch, gamma=0.5)
    history: list[dict[str, Any]] = []
    scaler_state: dict[str, Any] | None = None
    start = 0
    cpu_before = 0.0  # CPU seconds spent by earlier, interrupted processes of this run
    best: float | None = None
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=True)
        defaults = {**asdict(o), **LEGACY_OPTIONS}
        changed = [k for k in SAME_ON_RESUME if state["options"].get(k, defaults[k]) != asdict(o)[k]]
        if changed:
            raise OutputError(
                f"{out_dir}: the run was started with other options ({', '.join(changed)})",
                "resume with the same options, or choose another --out",
            )
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        scaler_state = state.get("scaler")
        start = int(state["step"])
        cpu_before = float(state.get("cpu_seconds", 0.0))
        best = state.get("best_val_psnr")
        if metrics_path.exists():
            history = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
            history = [h for h in history if h["step"] <= start]
    _rewrite_metrics(metrics_path, history)  # drop what an interrupted run logged after its checkpoint
    amp = dev.type == "cuda" and o.mixed_precision
    amp_dtype = torch.bfloat16 if amp and cuda_has_native_bf16(dev) else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    if scaler_state:
        scaler.load_state_dict(scaler_state)  # the loss scale it had grown or shrunk to
    cpu_started = time.process_time()

    def cpu_seconds() -> float:
        return cpu_before + time.process_time() - cpu_started

    loss_value = math.nan
    reached = start
    window: list[torch.Tensor] = []
    data_wait = 0.0

    on_device = o.shake and o.shake_on == "device"
    device_photos: dict[int, torch.Tensor] = {}  # each photo uploaded once, as (3,H,W) uint8

    def make_batch(step: int) -> Any:
        rng = np.random.default_rng([o.seed, step])
        if on_device:  # drawn here, in the background, with what the device needs from the host; rendered below
            assert isinstance(pairs, ShakeData)
            plans = pairs.plans(rng, o.batch, o.flip)
            return plans, host_batch([c for _, c, _ in plans], [f for _, _, f in plans], pin=dev.type == "cuda")
        return pairs.batch(rng, o.batch, o.crop, o.flip)

    def render(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        assert isinstance(pairs, ShakeData)
        plans, host = batch
        for i, _, _ in plans:
            if i not in device_photos:
                device_photos[i] = torch.from_numpy(pairs.load(i)).permute(2, 0, 1).to(dev)
        return render_crops([device_photos[i] for i, _, _ in plans], [c for _, c, _ in plans], host=host)

    prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mimo-prefetch")
    upcoming = prefetch.submit(make_batch, start + 1) if start < o.steps else None
    try:
        for step in range(start + 1, o.steps + 1):
            assert upcoming is not None
            waited = time.perf_counter()
            batch = upcoming.result()
            data_wait += time.perf_counter() - waited  # the step stalled on data this long
            last = step == o.steps or (time_limit is not None and time.perf_counter() - started > time_limit)
            upcoming = prefetch.submit(make_batch, step + 1) if not last else None  # overlaps this step
            blur, sharp = render(batch) if on_device else batch
            blur = blur.to(dev, non_blocking=True).contiguous(memory_format=fmt)
            sharp = sharp.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
                outputs = model(blur)
            loss = compute_loss(outputs, sharp, o.fft_weight)
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            scheduler.step()
            window.append(loss.detach())
            # on a GPU the loss is read at log steps only: reading it waits for the step, and the
            # host would stop queueing the next batch's work while the device runs this one
            if dev.type != "cuda" or step % o.log_every == 0 or last:
                loss_value = float(window[-1])
            record: dict[str, Any] | None = None
            if step % o.log_every == 0 or last:
                record = {
                    "step": step,
                    "loss": float(np.mean([float(x) for x in window])),
                    "lr": scheduler.get_last_lr()[0],
                    "data_wait": round(data_wait, 3),  # seconds spent waiting for batches since the last record
                }
                window, data_wait = [], 0.0
            if val_pairs and (step % o.val_every == 0 or last):
                record = record or {"step": step}
                record["val_psnr"] = validate(model, val_pairs, dev, channels_last)
                if best is None or record["val_psnr"] > best:
                    best = record["val_psnr"]
                    export_weights(model, out_dir / "best.safetensors")
            if record is not None:
                record["seconds"] = round(time.perf_counter() - started, 3)
                record["cpu_seconds"] = round(cpu_seconds(), 1)
                history.append(record)
                with metrics_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            if step % o.checkpoint_every == 0 or last:
                state = {
                    "step": step,
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "options": asdict(o),
                    "architecture": type(model).__name__,
                    "num_res": model.num_res,
                    "base_channel": model.base_channel,
                    "cpu_seconds": cpu_seconds(),
                    "best_val_psnr": best,
                }
                _save_checkpoint(ckpt_path, state)
            if on_progress:
                on_progress(step, o.steps, loss_value)
            reached = step
            if last:
                break
    finally:
        prefetch.shutdown(wait=True, cancel_futures=True)
        pairs.close()
    _rewrite_metrics(metrics_path, history)
    plot_history(history, out_dir / "loss.png")
    weights = export_weights(model.eval(), out_dir / "model.safetensors")
    vals = [h["val_psnr"] for h in history if "val_psnr" in h]
    return TrainSummary(
        out=str(out_dir),
        steps=reached,
        resumed_from=start,
        final_loss=loss_value,
        val_psnr=vals[-1] if vals else None,
        weights=str(weights),
        seconds=time.perf_counter() - started,
        cpu_seconds=cpu_seconds(),
        best_val_psnr=best,
        history=history,
    )


def _rewrite_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl as the history says: a resumed run drops lines an interrupted run wrote
    after its last checkpoint."""
    with atomic_write(path) as f:
        f.write("".join(json.dumps(h) + "\n" for h in history).encode())
