from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mimocli.arch import MIMOUNet
from mimocli.engine import Deblurrer
from mimocli.tiling import TileGrid, pad_to_multiple, tile_starts

from .conftest import photo, tiny_model


@pytest.mark.parametrize(("length", "tile", "overlap"), [(100, 32, 8), (64, 64, 8), (1000, 256, 64), (12, 8, 4)])
def test_tile_starts_cover_aligned_and_overlap(length, tile, overlap):
    length = -(-length // 4) * 4
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length
    assert all(s % 4 == 0 for s in starts)
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_windows_cover_every_pixel_about_once():
    # The engine divides by the summed weights; this checks no pixel is starved or dominated.
    grid = TileGrid.plan(200, 120, 64, 16)
    for scale in (1, 2, 4):
        total = torch.zeros(200 // scale, 120 // scale)
        for t in grid:
            w = grid.window(t, scale)
            assert w.shape == (t.h // scale, t.w // scale)
            assert w.min() > 0
            total[t.y // scale : (t.y + t.h) // scale, t.x // scale : (t.x + t.w) // scale] += w
        assert total.min() > 0.99 and total.max() < 1.1
    two = TileGrid.plan(64, 112, 64, 16)  # two tiles: the raised-cosine halves sum to exactly one
    total = torch.zeros(64, 112)
    for t in two:
        total[:, t.x : t.x + t.w] += two.window(t)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)


def test_plan_rejects_unpadded_sizes():
    with pytest.raises(ValueError, match="multiple of 4"):
        TileGrid.plan(101, 64, 32, 8)


def test_pad_reflects_and_tiny_images_replicate():
    x = torch.arange(30.0).reshape(1, 1, 5, 6)
    p = pad_to_multiple(x)
    assert p.shape[-2:] == (8, 8)
    assert torch.equal(p[..., 5, :6], x[..., 3, :])  # reflection about the last row
    assert pad_to_multiple(torch.rand(1, 3, 1, 1)).shape[-2:] == (4, 4)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_tiled_agrees_with_untiled_tiny_model():
    img = photo(150, 230)
    model = tiny_model()
    whole = Deblurrer(model, device="cpu", precision="fp32", tile=0)(img)
    tiled = Deblurrer(model, device="cpu", precision="fp32", tile=64, tile_overlap=32)(img)
    assert tiled.tiles > 4 and whole.tiles == 1
    assert tiled.image.shape == whole.image.shape == img.shape
    assert _psnr(tiled.image, whole.image) > 50
    for s in (0.5, 0.25):
        assert tiled.scales[s].shape == whole.scales[s].shape
        assert _psnr(tiled.scales[s], whole.scales[s]) > 45


@pytest.mark.shared
def test_tiled_agrees_with_untiled_across_borders(shared):
    """Upstream-keyed MIMO-UNet on a real GoPro crop: every tile seam stays within a few levels."""
    import cv2

    model = MIMOUNet(8)
    model.load_state_dict(
        {k: v.float() for k, v in load_file(shared / "reference" / "mimo_unet_random.safetensors").items()}
    )
    img = cv2.imread(str(shared / "data/pairs/gopro_flower/blur.png"))[:, :, ::-1][200:400, 300:620].copy()
    whole = Deblurrer(model, device="cpu", precision="fp32", tile=0)(img)
    tiled = Deblurrer(model, device="cpu", precision="fp32", tile=128, tile_overlap=32)(img)
    assert tiled.tiles >= 6
    assert _psnr(tiled.image, whole.image) > 55
    diff = np.abs(tiled.image.astype(int) - whole.image.astype(int))
    assert diff.max() <= 3
    # The seams themselves: the columns and rows where tiles meet are no worse than elsewhere.
    grid = TileGrid.plan(200, 320, 128, 32)
    seams_x = list(grid.xs[1:])
    assert all(diff[:, max(0, x - 4) : x + 36].max() <= 3 for x in seams_x)
