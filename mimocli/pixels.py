"""Pixels between numpy and torch: channel layouts (gray, alpha), integer depths and rounding."""

from __future__ import annotations

import numpy as np
import torch


def split_channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(H,W[,C]) -> colour (H,W,1 or 3) and alpha (H,W) or None. Raises ValueError on other shapes."""
    if image.ndim == 2:
        return image[:, :, None], None
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an (H,W) or (H,W,1..4) image, got shape {image.shape}")
    c = image.shape[2]
    if c in (2, 4):
        return image[:, :, : c - 1], image[:, :, c - 1]
    return image, None


def join_channels(color: np.ndarray, alpha: np.ndarray | None, squeeze: bool) -> np.ndarray:
    if alpha is not None:
        return np.concatenate([color, alpha[:, :, None]], axis=2)
    return color[:, :, 0] if squeeze else color


def rgb8(image: np.ndarray) -> np.ndarray:
    """(H,W) or (H,W,1..4) uint8/uint16 -> (H,W,3) uint8: alpha dropped, gray repeated, 16 bits
    rounded to 8 (x * 255 / 65535, halves up)."""
    color, _alpha = split_channels(image)
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    if color.dtype == np.uint16:
        color = np.floor(color.astype(np.float64) / 65535 * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(color)


def max_value(dtype: np.dtype) -> float:
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def to_tensor(color: np.ndarray) -> torch.Tensor:
    """(H,W,C) uint8/uint16/float -> (1,C,H,W) float32 in [0,1]."""
    scale = max_value(color.dtype)
    if not color.flags.writeable:
        color = color.copy()  # torch warns on read-only memory (and would share it)
    t = torch.from_numpy(np.ascontiguousarray(color)).float()
    return (t / scale).permute(2, 0, 1).unsqueeze(0)


def frames_to_tensor(batch: np.ndarray) -> torch.Tensor:
    """(B,H,W,C) uint8/uint16/float frames -> a (B,C,H,W) view: uint8 as it is, uint16 as int32
    (torch's uint16 lacks arithmetic on older releases), float scaled to [0,1]. Integer pixels
    travel to the device as integers (a quarter of the bytes of float32) and are scaled there."""
    pixels = np.ascontiguousarray(batch)
    if pixels.dtype == np.uint16:
        pixels = pixels.astype(np.int32)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    if x.dtype in (torch.uint8, torch.int32):
        return x
    return x.float() / max_value(batch.dtype)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255, int32 0..65535 or float -> float32 in [0,1] (on the tensor's device)."""
    if x.dtype == torch.uint8:
        return x.float() / 255
    if x.dtype in (torch.int32, torch.uint16):
        return x.float() / 65535
    return x.float()


def to_frames(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """(B,C,H,W) float on any device -> (B,H,W,C) host array clamped to [0,1], and rounded half to
    even (not truncated) for integer dtypes."""
    t = t.permute(0, 2, 3, 1).clamp(0, 1)
    if np.dtype(dtype) == np.uint8:
        return t.mul(255).round().to(torch.uint8).cpu().numpy()
    if np.issubdtype(dtype, np.integer):
        return t.mul(max_value(dtype)).round().to(torch.int32).cpu().numpy().astype(dtype)
    return t.cpu().numpy().astype(dtype)


def from_tensor(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """(1,C,H,W) float -> (H,W,C) clamped to [0,1] and, for integer dtypes, rounded (not truncated)."""
    return to_frames(t, dtype)[0]
