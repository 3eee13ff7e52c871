"""Camera shake rendered with torch on the training device: the crops ``mimocli.shake`` draws,
rendered as batched ``grid_sample`` warps averaged over the exposure, then noise, rounding and a
JPEG round trip, all on the device.

The draw (trajectory, homographies, noise field, JPEG quality) stays on the CPU, where it costs
about a millisecond a crop; the pixels (about 14 ms of a CPU thread per 256 px crop with OpenCV)
move to the device. Given the same ``CropPlan`` the two renderers agree to within rounding:
OpenCV's warp places samples on a 1/32-pixel grid and libjpeg computes in fixed point, where this
module uses float32 (``tests/test_shake_torch.py`` holds them above 40 dB PSNR of each other).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from .shake import CropPlan

# The IJG (libjpeg) quantisation tables at quality 50, in natural (row-major) order.
_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)


def quant_table(quality: int, chroma: bool = False) -> np.ndarray:
    """(8, 8) quantisation table of libjpeg's ``jpeg_set_quality`` (baseline: entries 1..255)."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    base = np.array(_CHROMA if chroma else _LUMA, dtype=np.int64)
    return np.clip((base * scale + 50) // 100, 1, 255).astype(np.float32)


@functools.cache
def _dct_matrix(device: torch.device) -> torch.Tensor:
    """The orthonormal 8-point DCT-II, which is JPEG's: coefficients = D @ block @ D.T (made once
    per device: a copy from the host waits for the device's queue)."""
    d = np.array([[math.cos((2 * x + 1) * u * math.pi / 16) for x in range(8)] for u in range(8)]) * 0.5
    d[0] /= math.sqrt(2)
    return torch.from_numpy(d.astype(np.float32)).to(device)


def quant_tables(quality: Sequence[int]) -> torch.Tensor:
    """(B,2,8,8) luma and chroma tables for each sample's quality, on the host."""
    return torch.from_numpy(np.stack([np.stack([quant_table(q), quant_table(q, chroma=True)]) for q in quality]))


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """(B,H,W) -> (B, H/8, W/8, 8, 8)."""
    b, h, w = x.shape
    return x.reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def _unblocks(x: torch.Tensor) -> torch.Tensor:
    b, nh, nw = x.shape[:3]
    return x.permute(0, 1, 3, 2, 4).reshape(b, nh * 8, nw * 8)


def _code_plane(plane: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """One plane (B,H,W) of levels 0..255 through level shift, DCT, quantisation with each
    sample's (B,8,8) table (rounding half away from zero, as libjpeg divides), dequantisation and
    inverse DCT; levels rounded and limited to 0..255, as the decoder's range limit does."""
    d = _dct_matrix(plane.device)
    coef = d @ _blocks(plane - 128) @ d.T
    t = tables[:, None, None]
    q = torch.sign(coef) * torch.floor(coef.abs() / t + 0.5)
    return torch.clamp(torch.round(_unblocks(d.T @ (q * t) @ d) + 128), 0, 255)


def _upsample_chroma(c: torch.Tensor) -> torch.Tensor:
    """libjpeg's 'fancy' h2v2 upsampling (a triangle filter: 3/4 of the nearer sample, 1/4 of the
    farther, in each direction; edges replicated), with its integer rounding."""
    pad = F.pad(c[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    mid = pad[:, 1:-1]
    upper = 3 * mid + pad[:, :-2]  # output rows 2r: this row and the one above
    lower = 3 * mid + pad[:, 2:]  # output rows 2r+1: this row and the one below
    rows = torch.stack([upper, lower], dim=2).reshape(c.shape[0], -1, c.shape[2] + 2)
    cur = rows[:, :, 1:-1]
    even = torch.floor((3 * cur + rows[:, :, :-2] + 8) / 16)
    odd = torch.floor((3 * cur + rows[:, :, 2:] + 7) / 16)
    return torch.stack([even, odd], dim=3).reshape(c.shape[0], 2 * c.shape[1], 2 * c.shape[2])


def jpeg_round_trip(x: torch.Tensor, quality: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """x: (B,3,H,W) levels 0..255 (integer-valued float) -> the same after a baseline JPEG encode
    and decode at each sample's ``quality`` (or its (B,2,8,8) ``quant_tables``, on x's device), as
    OpenCV's ``imencode('.jpg')`` and ``imdecode`` do it (libjpeg: 4:2:0 chroma, the IJG tables,
    fancy upsampling). Entropy coding loses nothing, so it is left out. Like the CPU path, the
    planes are given to the codec in OpenCV's BGR order: channel 2 is coded as red."""
    b, _, h, w = x.shape
    ph, pw = -h % 16, -w % 16  # libjpeg codes whole 16x16 macroblocks, replicating the edge
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    red, green, blue = xp[:, 2], xp[:, 1], xp[:, 0]
    y = torch.floor(0.299 * red + 0.587 * green + 0.114 * blue + 0.5)
    cb = torch.floor(-0.168736 * red - 0.331264 * green + 0.5 * blue + 128.5)
    cr = torch.floor(0.5 * red - 0.418688 * green - 0.081312 * blue + 128.5)
    bias = (torch.arange(xp.shape[3] // 2, device=x.device) % 2 + 1).float()  # jcsample.c's alternating 1, 2

    def down(c: torch.Tensor) -> torch.Tensor:
        s = c.reshape(b, c.shape[1] // 2, 2, c.shape[2] // 2, 2).sum(dim=(2, 4))
        return torch.floor((s + bias[: s.shape[2]]) / 4)

    tables = quality.to(x.device) if isinstance(quality, torch.Tensor) else quant_tables(quality).to(x.device)
    luma_t, chroma_t = tables[:, 0], tables[:, 1]
    y = _code_plane(y, luma_t)
    cb = _upsample_chroma(_code_plane(down(cb), chroma_t)) - 128
    cr = _upsample_chroma(_code_plane(down(cr), chroma_t)) - 128
    red = y + 1.402 * cr
    green = y - 0.344136 * cb - 0.714136 * cr
    blue = y + 1.772 * cb
    out = torch.clamp(torch.floor(torch.stack([blue, green, red], dim=1) + 0.5), 0, 255)
    return out[:, :, :h, :w]


def area_matrix(n_src: int, n_dst: int, scale: float, device: torch.device | None = None) -> torch.Tensor:
    """(n_dst, n_src) weights of OpenCV's INTER_AREA resize along one axis for ``fx = scale < 1``:
    each output pixel averages the input it covers, weighted by overlap (OpenCV drops overlaps
    under 1e-3 of a pixel, and so does this). Built on ``device``: no copy from the host."""
    inv = 1.0 / scale
    dev = torch.device(device or "cpu")
    wide = torch.float64 if dev.type in ("cpu", "cuda") else torch.float32  # MPS has no float64
    f1 = torch.arange(n_dst, device=dev, dtype=wide)[:, None] * inv
    i = torch.arange(n_src, device=dev, dtype=wide)[None, :]
    overlap = (torch.minimum(f1 + inv, i + 1) - torch.maximum(f1, i)).clamp_(min=0)
    overlap = torch.where(overlap > 1e-3, overlap, 0)
    cell = torch.clamp(n_src - f1, max=inv)  # the last cell may run past the input
    return (overlap / cell).float()


def _pixels(bw: int, bh: int, device: torch.device) -> torch.Tensor:
    """(bh,bw,3) homogeneous coordinates (x, y, 1) of a box's pixels."""
    ys = torch.arange(bh, device=device, dtype=torch.float32)[:, None].expand(bh, bw)
    xs = torch.arange(bw, device=device, dtype=torch.float32)[None, :].expand(bh, bw)
    return torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)


def _warp_average(region: torch.Tensor, maps: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """(C,h,w) region in [0,1] -> (C,bh,bw) average of its warps by ``maps`` (N,3,3: box pixel
    -> region pixel) at the box's pixels ``pts`` (``_pixels``); bilinear, reflected about the
    border pixels as BORDER_REFLECT_101."""
    src = torch.einsum("nij,hwj->nhwi", maps, pts)
    h, w = region.shape[1:]
    gx = src[..., 0] / src[..., 2] * (2 / max(w - 1, 1)) - 1
    gy = src[..., 1] / src[..., 2] * (2 / max(h - 1, 1)) - 1
    grid = torch.stack([gx, gy], dim=-1)
    n = grid.shape[0]
    warped = F.grid_sample(
        region[None].expand(n, -1, -1, -1), grid, mode="bilinear", padding_mode="reflection", align_corners=True
    )
    return warped.mean(dim=0)


@dataclass(frozen=True)
class HostBatch:
    """What rendering a batch needs from the host, one tensor per kind: a copy from pageable host
    memory waits for the device's queue, so one per crop would serialise host and device; from
    pinned memory (``pin``) the copies do not wait at all. Made where the crops are drawn (the
    training loop's background thread)."""

    maps: torch.Tensor  # (B,N,3,3) float32: box pixel -> region pixel per pose; identity past a crop's poses
    noise: torch.Tensor  # (B,S,S,C) float32 in 8-bit levels, zero without noise
    meta: torch.Tensor  # (B,2) int64: JPEG quality (0: none), flipped (0/1)
    tables: torch.Tensor  # (B,2,8,8) float32: JPEG quantisation tables (quality 100 where none)


def host_batch(
    crops: Sequence[CropPlan], flips: Sequence[bool] | None = None, channels: int = 3, pin: bool = False
) -> HostBatch:
    b = len(crops)
    bw, bh = crops[0].plan.box[2:]
    maps = np.tile(np.eye(3, dtype=np.float32), (b, max(c.plan.shake.samples for c in crops), 1, 1))
    noise = np.zeros((b, bh, bw, channels), np.float32)
    for k, c in enumerate(crops):
        maps[k, : c.plan.shake.samples] = c.plan.warps
        if c.plan.noise is not None:
            noise[k] = c.plan.noise * np.float32(c.plan.shake.noise)
    quality = [c.plan.shake.jpeg for c in crops]
    meta = np.array([[q, bool(flips and flips[k])] for k, q in enumerate(quality)], np.int64)
    parts = [
        torch.from_numpy(maps),
        torch.from_numpy(noise),
        torch.from_numpy(meta),
        quant_tables([q or 100 for q in quality]),
    ]
    if pin:
        parts = [t.pin_memory() for t in parts]
    return HostBatch(*parts)


def render_crops(
    photos: Sequence[torch.Tensor],
    crops: Sequence[CropPlan],
    flips: Sequence[bool] | None = None,
    host: HostBatch | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """photos: per crop, the (C,H,W) uint8 photo it was drawn from, on the device; the crops must
    share one size. Returns (blurry, sharp): (B,C,S,S) float32 in [0,1] on that device, flipped
    left-right where ``flips`` says, as ``mimocli.shake.render_crop`` would make them (8-bit levels).
    ``host``: the batch's ``host_batch`` if made already (then ``flips`` is read from it)."""
    dev = photos[0].device
    host = host or host_batch(crops, flips, photos[0].shape[0])
    bw, bh = crops[0].plan.box[2:]
    maps_d = host.maps.to(dev, non_blocking=True)
    noise_d = host.noise.to(dev, non_blocking=True).permute(0, 3, 1, 2)
    meta_d = host.meta.to(dev, non_blocking=True)
    pts = _pixels(bw, bh, dev)
    blurs, sharps = [], []
    for k, (photo, crop) in enumerate(zip(photos, crops, strict=True)):
        ox0, oy0, ox1, oy1 = crop.source
        region = photo[:, oy0:oy1, ox0:ox1].float()
        if crop.scale < 1:
            rw, rh = crop.size
            ry = area_matrix(region.shape[1], rh, crop.scale, dev)
            rx = area_matrix(region.shape[2], rw, crop.scale, dev)
            region = torch.round(ry @ region @ rx.T).clamp_(0, 255)  # 8-bit levels, as cv2.resize writes them
        plan = crop.plan
        x0, y0 = plan.box[:2]
        s = plan.shake
        sharps.append(region[:, y0 : y0 + bh, x0 : x0 + bw] / 255)
        if s.samples == 1:
            blurs.append(region[:, y0 : y0 + bh, x0 : x0 + bw])
            continue
        src = region / 255
        if s.linear:
            src = src.pow(plan.gamma)
        acc = _warp_average(src, maps_d[k, : s.samples], pts)
        if s.linear:
            acc = acc.clamp(min=0).pow(1 / plan.gamma)
        blurs.append(acc * 255)
    blur = torch.round((torch.stack(blurs) + noise_d).clamp_(0, 255))
    if any(c.plan.shake.jpeg for c in crops):
        coded = jpeg_round_trip(blur, host.tables.to(dev, non_blocking=True))
        blur = torch.where(meta_d[:, 0, None, None, None] > 0, coded, blur)
    sharp = torch.stack(sharps)
    blur = blur / 255
    if any(bool(f) for f in host.meta[:, 1].tolist()):
        f = meta_d[:, 1, None, None, None] > 0
        blur = torch.where(f, blur.flip(-1), blur)
        sharp = torch.where(f, sharp.flip(-1), sharp)
    return blur, sharp
