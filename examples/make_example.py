"""Render the shipped example: a synthetic street scene, blurred along a known camera path.

    python examples/make_example.py      # writes examples/scene_sharp.png, scene_blurry.jpg, scene_shaken.jpg

The blur is the average of the sharp scene shifted along a smooth, curved camera-shake path
(the GoPro way: many sharp instants averaged over the exposure), so the ground truth is known.
scene_shaken.jpg is the same scene under a milder, 8 px hand shake drawn by mimocli's own camera
shake model (``mimocli.shake``, as `mimo synth --shake` draws it): the kind of blur that the
bundled mimo-unet-lite model removes, where it leaves the 14 px shake of scene_blurry.jpg as it is.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
W, H = 640, 424


def render() -> np.ndarray:
    rng = np.random.default_rng(2021)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.zeros((H, W, 3), np.float32)
    sky = np.clip(1 - yy / (H * 0.6), 0, 1)[..., None]
    img[:] = sky * np.array([0.95, 0.75, 0.45]) + (1 - sky) * np.array([0.35, 0.35, 0.4])  # BGR
    for i in range(9):  # buildings with lit windows
        x0 = int(i * W / 9 + rng.integers(-10, 10))
        bw, bh = int(rng.integers(50, 80)), int(rng.integers(150, 300))
        color = rng.uniform(0.2, 0.7, 3)
        cv2.rectangle(img, (x0, H - 60 - bh), (x0 + bw, H - 60), color.tolist(), -1)
        for wy in range(H - 50 - bh, H - 70, 18):
            for wx in range(x0 + 6, x0 + bw - 10, 14):
                lit = rng.random() < 0.5
                cv2.rectangle(img, (wx, wy), (wx + 7, wy + 9), (0.6, 0.9, 1.0) if lit else (0.1, 0.1, 0.12), -1)
    cv2.rectangle(img, (0, H - 60), (W, H), (0.25, 0.25, 0.27), -1)  # road
    for x in range(0, W, 60):
        cv2.rectangle(img, (x, H - 32), (x + 30, H - 28), (0.9, 0.9, 0.9), -1)
    text = np.zeros((H, W, 3), np.uint8)  # OpenCV draws text on 8-bit images only
    cv2.putText(text, "MIMO-UNet", (40, 70), cv2.FONT_HERSHEY_DUPLEX, 1.6, (255, 255, 255), 3, cv2.LINE_AA)
    cv2.putText(text, "deblur me", (420, 120), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
    ink = text[..., :1].astype(np.float32) / 255
    img = img * (1 - ink) + ink * np.array([0.1, 0.1, 0.1], np.float32)
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)  # sensor grain
    return np.clip(img, 0, 1)


def camera_path(steps: int = 31) -> np.ndarray:
    """(steps, 2) pixel offsets of a curved hand-shake over the exposure (about 14 px long)."""
    t = np.linspace(0, 1, steps)
    return np.stack([12 * t - 6, 4 * np.sin(2.5 * np.pi * t)], axis=1)


def blur(sharp: np.ndarray) -> np.ndarray:
    acc = np.zeros_like(sharp)
    for dx, dy in camera_path():
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        acc += cv2.warpAffine(sharp, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return acc / len(camera_path())


def shaken(sharp8: np.ndarray) -> np.ndarray:
    """An 8 px camera shake of the 8-bit scene, without roll, push, noise or JPEG."""
    from mimocli.shake import ShakeModel, shake_region

    mild = ShakeModel(sharp=0.0, weak=0.0, length=(8.0, 8.0), roll=0.0, push=0.0, noise=0.0, jpeg=0.0, linear=0.0)
    return shake_region(sharp8, np.random.default_rng(7), mild)[0]


def main() -> None:
    sharp = render()
    blurry = blur(sharp)
    sharp8 = np.rint(sharp * 255).astype(np.uint8)
    cv2.imwrite(str(HERE / "scene_sharp.png"), sharp8)
    cv2.imwrite(str(HERE / "scene_blurry.jpg"), np.rint(blurry * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
    cv2.imwrite(str(HERE / "scene_shaken.jpg"), shaken(sharp8), [cv2.IMWRITE_JPEG_QUALITY, 92])


if __name__ == "__main__":
    main()
