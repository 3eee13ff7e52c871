"""Random camera shake for training and test pairs: non-uniform blur from a camera path; never prints.

A handheld camera turns a little while the shutter is open. We draw that path (pitch and yaw
from Boracchi and Foi's shake trajectory, plus a smooth roll and a slight push along the optical
axis), turn each pose into the homography K R K^-1 of a rotating pinhole camera, and average the
photo warped by every pose over the exposure, optionally in linear light, as Nah et al. averaged
GoPro frames. Roll and perspective make the blur vary across the frame, as real shake does; a
single convolution kernel cannot. The mean pose is the identity, so the sharp target is the photo
itself and the blur's centre of mass sits on it. (Centring on the mid-exposure pose instead, like
GoPro's middle frame, leaves a wandering path's blur off its target by about a tenth of its length:
a shift the blurry image does not reveal, so a model learns to keep the blur rather than guess it.)

Blur is drawn fresh for every crop while training (``shake_crop``), with a share of weak blur and
of no blur at all so that a model learns to leave sharp detail alone, then sensor noise and JPEG.

Photos are split by a fixed rule (``split_of``) into train, validation and a held-out test set.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# The held-out rule: crc32 of "FOLDER/FILE" (the photo's folder name and file name). 0 mod 10:
# test (never trained on, never used to choose anything); 1 mod 20: validation; the rest: train.
SPLITS = ("train", "val", "test")


def photo_key(path: str | os.PathLike[str]) -> int:
    """crc32 of "FOLDER/FILE": the same for a photo wherever its dataset lies. The split and the
    seeds of fixed validation crops follow from it."""
    p = Path(path)
    return zlib.crc32(f"{p.parent.name}/{p.name}".encode())


def split_of(path: str | os.PathLike[str]) -> str:
    """'train', 'val' or 'test' for a photo, from its folder and file name only."""
    h = photo_key(path)
    if h % 10 == 0:
        return "test"
    if h % 20 == 1:
        return "val"
    return "train"


@dataclass(frozen=True)
class ShakeModel:
    """The distribution a blur is drawn from. Lengths are the extent of the camera path in pixels
    at the working scale (after ``scale``); probabilities are per draw."""

    sharp: float = 0.1  # no blur at all (noise and JPEG still apply)
    weak: float = 0.2  # weak blur, a path of ``weak_length`` pixels
    weak_length: tuple[float, float] = (0.5, 4.0)
    length: tuple[float, float] = (4.0, 36.0)  # strong blur, drawn log-uniform
    anxiety: float = 0.005  # Boracchi and Foi's restlessness of the path
    roll: float = 1.5  # degrees: the largest roll over the exposure
    push: float = 0.01  # the largest relative zoom from moving along the optical axis
    focal: tuple[float, float] = (0.7, 1.6)  # focal length over the photo's longer side (24-55 mm full frame)
    exposure: tuple[float, float] = (0.5, 1.0)  # part of the drawn path the shutter sees
    linear: float = 0.5  # probability of averaging in linear light
    gamma: tuple[float, float] = (2.0, 2.4)
    noise: float = 0.5  # probability of Gaussian noise
    noise_sigma: tuple[float, float] = (0.5, 4.0)  # 8-bit levels
    jpeg: float = 0.3  # probability of a JPEG round trip
    jpeg_quality: tuple[int, int] = (60, 95)
    scale: tuple[float, float] = (0.5, 1.0)  # the photo is resized by this before cropping (detail per pixel)

    @classmethod
    def test(cls) -> ShakeModel:
        """Every draw blurred (no weak or sharp share): the held-out test and ``mimo synth --shake``."""
        return cls(sharp=0.0, weak=0.0, scale=(1.0, 1.0))


@dataclass(frozen=True, eq=False)
class Shake:
    """One drawn blur: what the caller may record about it, and its poses."""

    length: float  # extent of the pitch/yaw path, pixels
    roll: float  # degrees
    samples: int  # poses averaged
    linear: bool
    noise: float  # 8-bit levels
    jpeg: int  # quality, 0 for none
    maps: np.ndarray = field(default_factory=lambda: np.eye(3)[None])  # (N,3,3): output pixel -> source pixel

    def psf(self, x: float, y: float, size: int) -> np.ndarray:
        """The (size, size) blur kernel at output pixel (x, y), summing to 1: where that pixel's light
        came from over the exposure, splatted bilinearly around the kernel's centre."""
        p = self.maps @ np.array([x, y, 1.0])
        c = (size - 1) / 2
        return splat(p[:, :2] / p[:, 2:] - [x - c, y - c], size)


def splat(points: np.ndarray, size: int) -> np.ndarray:
    """A (size, size) float64 kernel summing to 1 (all zeros if no point lands): each (x, y) point
    adds weight 1 spread bilinearly over its four neighbours; weight outside the kernel is lost."""
    k = np.zeros((size, size))
    for px, py in points:
        x0, y0 = math.floor(px), math.floor(py)
        fx, fy = px - x0, py - y0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= x0 + dx < size and 0 <= y0 + dy < size:
                k[y0 + dy, x0 + dx] += w
    total = k.sum()
    return k / total if total > 0 else k


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return lo if hi <= lo else float(rng.uniform(lo, hi))


def camera_path(rng: np.random.Generator, length: float, anxiety: float = 0.005, points: int = 256) -> np.ndarray:
    """(points, 2) positions in pixels of a shake path of total arc length ``length``.

    Boracchi and Foi's model: a walk at constant speed whose velocity is pulled back towards the
    start (centripetal term), shaken by Gaussian noise, and now and then jerked into a near
    reversal. ``anxiety`` scales how restless it is (0.005 as in the authors' code: smooth curves
    with a jerk or two); the strengths of the three terms are drawn per path. The authors walk
    2000 points; the per-step terms are scaled so that fewer points keep the same shape."""
    centripetal = 0.7 * rng.random()
    big_shakes = 0.2 * rng.random()
    gaussian = 10 * rng.random()
    step = length / (points - 1)
    angle = 2 * math.pi * rng.random()
    v = complex(math.cos(angle), math.sin(angle)) * (anxiety if anxiety > 0 else step)
    x = np.zeros(points, dtype=complex)
    noise = rng.standard_normal((points, 2))
    jerks = rng.random((points, 3))
    # the walk is defined on 2000 points upstream; scale the per-step terms so the shape survives fewer points
    k = 2000 / points
    for t in range(points - 1):
        turn = 0j
        if jerks[t, 0] < big_shakes * anxiety * k:
            turn = 2 * v * complex(math.cos(math.pi + jerks[t, 1] - 0.5), math.sin(math.pi + jerks[t, 2] - 0.5))
        dv = turn + k * anxiety * (gaussian * complex(noise[t, 0], noise[t, 1]) - centripetal * x[t]) * step
        v += dv
        v = v / (abs(v) or 1.0) * step
        x[t + 1] = x[t] + v
    return np.stack([x.real, x.imag], axis=1)


def _smooth_walk(rng: np.random.Generator, n: int) -> np.ndarray:
    """n values of a smooth random curve with range 1 (a random cubic), for roll and push."""
    t = np.linspace(-1, 1, n)
    c = rng.standard_normal(4)
    y = c[0] * t + c[1] * t**2 + c[2] * t**3 + 0.3 * c[3] * np.sin(3 * t + rng.uniform(0, 6))
    span = float(y.max() - y.min())
    return (y - y.min()) / span if span > 0 else np.zeros(n)


def homographies(
    path: np.ndarray, roll: np.ndarray, push: np.ndarray, focal: float, centre: tuple[float, float]
) -> np.ndarray:
    """(N,3,3) maps from a pixel of the shaken view to the reference photo, one per pose: pitch and
    yaw of ``path / focal`` radians, ``roll`` radians about the optical axis and zoom ``1 + push``,
    for a pinhole camera with ``focal`` pixels and principal point ``centre``."""
    cx, cy = centre
    k = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1.0]])
    k_inv = np.linalg.inv(k)
    out = np.empty((len(path), 3, 3))
    for i, ((dx, dy), r, z) in enumerate(zip(path, roll, push, strict=True)):
        yaw, pitch = math.atan2(dx, focal), math.atan2(dy, focal)
        ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
        rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
        rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
        zoom = np.diag([1 + z, 1 + z, 1.0])
        out[i] = k @ zoom @ rz @ ry @ rx @ k_inv
    return out


def _draw(
    rng: np.random.Generator, model: ShakeModel, focal: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Poses (path px, roll rad, push) centred on their mean, plus the path length and roll in degrees."""
    kind = rng.random()
    if kind < model.sharp:
        return np.zeros((1, 2)), np.zeros(1), np.zeros(1), 0.0, 0.0
    weak = kind < model.sharp + model.weak
    lo, hi = model.weak_length if weak else model.length
    length = float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else lo
    exposure = _uniform(rng, model.exposure)
    full = camera_path(rng, length / exposure, model.anxiety)
    n_exposed = max(2, round(len(full) * exposure))
    start = int(rng.integers(0, len(full) - n_exposed + 1))
    path = full[start : start + n_exposed]
    share = length / model.length[1]  # roll and push grow with the shake: weak blur stays nearly uniform
    roll_deg = float(rng.uniform(0, model.roll)) * share
    push_amp = float(rng.uniform(0, model.push)) * share
    # about one pose per pixel of travel at the far corner keeps the average free of ghosts
    reach = length + math.radians(roll_deg) * focal + push_amp * focal
    samples = int(min(64, max(3, math.ceil(reach * 1.2) + 1)))
    pick = np.linspace(0, len(path) - 1, samples)
    xy = np.stack([np.interp(pick, np.arange(len(path)), path[:, i]) for i in range(2)], axis=1)
    roll = _smooth_walk(rng, samples) * math.radians(roll_deg)
    push = _smooth_walk(rng, samples) * push_amp
    # centre on the mean pose: the blur's centre of mass falls on the sharp target (module docstring)
    return xy - xy.mean(axis=0), roll - roll.mean(), push - push.mean(), length, roll_deg


@dataclass(frozen=True, eq=False)
class Plan:
    """Everything drawn for one blurred box, before any pixel is touched: the box (x, y, w, h) of
    the source image, the shake, the gamma of linear light and the unit-variance noise field
    (scaled by ``shake.noise`` levels when rendered; None without noise). Rendering a plan draws
    nothing more, so the CPU renderer (``render``) and the device one (``mimocli.shake_torch``)
    make the same blur from the same draw."""

    box: tuple[int, int, int, int]
    shake: Shake
    gamma: float
    noise: np.ndarray | None

    @property
    def warps(self) -> np.ndarray:
        """(N,3,3) maps from a pixel of the box to the source image's pixel it sees, per pose."""
        x0, y0 = self.box[:2]
        return np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]]) @ self.shake.maps


def plan_region(
    shape: tuple[int, ...],
    rng: np.random.Generator,
    model: ShakeModel,
    box: tuple[int, int, int, int] | None = None,
    centre: tuple[float, float] | None = None,
    focal: float | None = None,
) -> Plan:
    """Draw the shake of the ``box`` (x, y, w, h; default: all) of an image of ``shape`` (H,W[,C]),
    as ``shake_region`` would; the arguments mean what they mean there."""
    h, w = shape[:2]
    x0, y0, bw, bh = box or (0, 0, w, h)
    side = max(h, w)
    f = focal if focal is not None else _uniform(rng, model.focal) * side
    c = centre if centre is not None else ((w - 1) / 2, (h - 1) / 2)
    path, roll, push, length, roll_deg = _draw(rng, model, f)
    linear = bool(rng.random() < model.linear)
    gamma = _uniform(rng, model.gamma)
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]])  # box pixel -> image pixel
    maps = np.linalg.inv(shift) @ homographies(path, roll, push, f, c) @ shift
    sigma = _uniform(rng, model.noise_sigma) if rng.random() < model.noise else 0.0
    noise = rng.standard_normal((bh, bw, *shape[2:3]), dtype=np.float32) if sigma > 0 else None
    quality = int(rng.integers(model.jpeg_quality[0], model.jpeg_quality[1] + 1)) if rng.random() < model.jpeg else 0
    shake = Shake(length, roll_deg, len(path), linear, sigma, quality, maps)
    return Plan((x0, y0, bw, bh), shake, gamma, noise)


def render(image: np.ndarray, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """(blurry, sharp) of a plan's box of an (H,W[,C]) uint8/uint16 ``image``, on the CPU (OpenCV):
    each pose's warp (bilinear, reflected at the image's border) averaged, in linear light if the
    plan says so, then noise, rounding and a JPEG round trip."""
    x0, y0, bw, bh = plan.box
    s = plan.shake
    sharp = image[y0 : y0 + bh, x0 : x0 + bw]
    peak = 255.0 if image.dtype == np.uint8 else 65535.0
    blur: np.ndarray
    if s.samples == 1:
        blur = sharp.astype(np.float32)
    else:
        src = image.astype(np.float32) / peak
        if s.linear:
            src = np.power(src, plan.gamma)
        acc = np.zeros((bh, bw, image.shape[2]) if image.ndim == 3 else (bh, bw), np.float32)
        for m in plan.warps:
            acc += cv2.warpPerspective(
                src,
                m,
                (bw, bh),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REFLECT_101,
            ).reshape(acc.shape)
        acc /= s.samples
        if s.linear:
            acc = np.power(np.clip(acc, 0, None), 1 / plan.gamma)
        blur = acc * peak
    if plan.noise is not None:
        blur = blur + plan.noise * np.float32(s.noise * peak / 255)
    dtype = np.uint8 if peak == 255 else np.uint16
    out: np.ndarray = np.rint(np.clip(blur, 0, peak)).astype(dtype)
    if s.jpeg:
        # OpenCV takes the RGB planes for BGR: the chroma weighs red and blue the other way round,
        # which JPEG's loss does not care about (shake_torch.jpeg_round_trip does the same)
        eight = out if dtype == np.uint8 else np.rint(out / 257).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", eight, [cv2.IMWRITE_JPEG_QUALITY, s.jpeg])
        decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else None
        if decoded is not None:
            decoded = decoded.reshape(eight.shape)
            out = decoded if dtype == np.uint8 else decoded.astype(np.uint16) * 257
    return out, np.ascontiguousarray(sharp)


def shake_region(
    image: np.ndarray,
    rng: np.random.Generator,
    model: ShakeModel,
    box: tuple[int, int, int, int] | None = None,
    centre: tuple[float, float] | None = None,
    focal: float | None = None,
) -> tuple[np.ndarray, np.ndarray, Shake]:
    """Blur the ``box`` (x, y, w, h; default: all) of an (H,W,C) uint8/uint16 ``image`` with a drawn
    shake; pixels outside the box are seen by the blur, reflected at the image's border.

    ``centre`` (the principal point, default the image's middle) and ``focal`` (pixels, default
    drawn from ``model.focal`` times the longer side) place the box in a larger photo.
    Returns (blurry, sharp, shake), both images of the box's size and the image's dtype.
    """
    plan = plan_region(image.shape, rng, model, box, centre, focal)
    blur, sharp = render(image, plan)
    return blur, sharp, plan.shake


@dataclass(frozen=True, eq=False)
class CropPlan:
    """A drawn training crop: the part of the photo (x0, y0, x1, y1) the blur reaches, the scale
    it is resized by (OpenCV's area resampling, to ``size`` (w, h); none at scale 1) and the plan
    of the crop's box in that resized region."""

    source: tuple[int, int, int, int]
    scale: float
    size: tuple[int, int]
    plan: Plan


def plan_crop(
    shape: tuple[int, ...],
    rng: np.random.Generator,
    size: int,
    model: ShakeModel = ShakeModel(),  # noqa: B008
) -> CropPlan:
    """Draw a ``size`` crop of a photo of ``shape`` (H,W,C) as ``shake_crop`` would. Raises
    ValueError for a photo smaller than the crop."""
    h, w = shape[:2]
    if min(h, w) < size:
        raise ValueError(f"a {w}x{h} photo is smaller than the {size}px crop")
    lo = max(model.scale[0], size / min(h, w))
    s = _uniform(rng, (lo, max(lo, model.scale[1])))
    # crop origin in the resized photo, then the original pixels it and the blur's reach cover
    hs, ws = int(h * s), int(w * s)
    cy, cx = int(rng.integers(0, max(1, hs - size + 1))), int(rng.integers(0, max(1, ws - size + 1)))
    reach = model.length[1] * 1.5 + math.radians(model.roll) * max(hs, ws) + model.push * max(hs, ws) + 4
    ox0, oy0 = max(0, int((cx - reach) / s)), max(0, int((cy - reach) / s))
    ox1, oy1 = min(w, math.ceil((cx + size + reach) / s) + 1), min(h, math.ceil((cy + size + reach) / s) + 1)
    rw, rh = ox1 - ox0, oy1 - oy0
    if s < 1:  # the size cv2.resize gives for fx = fy = s
        rw, rh = max(1, round(rw * s)), max(1, round(rh * s))
    rx0, ry0 = int(round(ox0 * s)), int(round(oy0 * s))  # the region's origin in the resized photo
    bx = min(max(cx - rx0, 0), rw - size)
    by = min(max(cy - ry0, 0), rh - size)
    focal = _uniform(rng, model.focal) * max(hs, ws)
    centre = ((ws - 1) / 2 - rx0, (hs - 1) / 2 - ry0)
    plan = plan_region((rh, rw, *shape[2:3]), rng, model, (bx, by, size, size), centre, focal)
    return CropPlan((ox0, oy0, ox1, oy1), s, (rw, rh), plan)


def render_crop(image: np.ndarray, crop: CropPlan) -> tuple[np.ndarray, np.ndarray]:
    """(blurry, sharp) of a drawn crop of ``image``, on the CPU."""
    ox0, oy0, ox1, oy1 = crop.source
    region = image[oy0:oy1, ox0:ox1]
    if crop.scale < 1:
        region = cv2.resize(region, None, fx=crop.scale, fy=crop.scale, interpolation=cv2.INTER_AREA)
        if region.ndim == 2:
            region = region[:, :, None]
        assert (region.shape[1], region.shape[0]) == crop.size, "plan_crop and cv2.resize disagree on the size"
    return render(region, crop.plan)


def shake_crop(
    image: np.ndarray, rng: np.random.Generator, size: int, model: ShakeModel = ShakeModel()
) -> tuple[np.ndarray, np.ndarray, Shake]:
    """A random ``size`` x ``size`` crop of an (H,W,3) photo at a random scale, blurred by a fresh
    shake; (blurry, sharp, shake). The photo must be at least ``size`` on each side.

    Only the part of the photo that the blur reaches is resized, so a crop costs the same for any
    photo size. Raises ValueError for a photo smaller than the crop.
    """
    crop = plan_crop(image.shape, rng, size, model)
    blur, sharp = render_crop(image, crop)
    return blur, sharp, crop.plan.shake
