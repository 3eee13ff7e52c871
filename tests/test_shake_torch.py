from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mimocli.evaluate import psnr
from mimocli.shake import ShakeModel, plan_crop, render_crop
from mimocli.shake_torch import area_matrix, jpeg_round_trip, render_crops

from .conftest import photo

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device(name)


def _eight(x: torch.Tensor) -> np.ndarray:
    """(C,H,W) in [0,1] -> (H,W,C) uint8."""
    return (x * 255).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()


@pytest.mark.parametrize("device", DEVICES)
def test_one_drawn_shake_rendered_both_ways_agrees(device):
    """The same plan through OpenCV (CPU workers) and torch (the training device): every part of
    the model (warps at any scale, roll, linear light, noise, JPEG, sharp and weak draws) is
    drawn at least once across the seeds, and every crop agrees above 40 dB."""
    dev = _device(device)
    img = photo(300, 420, seed=3)
    on_dev = torch.from_numpy(img).permute(2, 0, 1).to(dev)
    seen = {"jpeg": 0, "linear": 0, "noise": 0, "sharp": 0, "warped": 0, "resized": 0}
    for seed in range(24):
        crop = plan_crop(img.shape, np.random.default_rng(seed), 96)
        blur_cpu, sharp_cpu = render_crop(img, crop)
        blur, sharp = render_crops([on_dev], [crop])
        assert blur.shape == sharp.shape == (1, 3, 96, 96) and blur.device.type == dev.type
        assert psnr(_eight(blur[0]), blur_cpu) > 40, seed
        assert np.abs(_eight(sharp[0]).astype(int) - sharp_cpu).max() <= 1  # the same resized pixels
        s = crop.plan.shake
        seen["jpeg"] += s.jpeg > 0
        seen["linear"] += s.linear and s.samples > 1
        seen["noise"] += s.noise > 0
        seen["sharp"] += s.samples == 1
        seen["warped"] += s.samples > 1
        seen["resized"] += crop.scale < 1
    assert all(seen.values()), seen


def test_a_batch_renders_each_crop_as_alone_and_flips_both_images():
    img = photo(200, 260, seed=1)
    t = torch.from_numpy(img).permute(2, 0, 1)
    crops = [plan_crop(img.shape, np.random.default_rng(s), 64) for s in range(6)]
    flips = [False, True, False, True, True, False]
    blur, sharp = render_crops([t] * 6, crops, flips)
    for k, (c, f) in enumerate(zip(crops, flips, strict=True)):
        b1, s1 = render_crops([t], [c])
        if f:
            b1, s1 = b1.flip(-1), s1.flip(-1)
        assert torch.allclose(blur[k], b1[0], atol=1 / 255) and torch.equal(sharp[k], s1[0])
    assert not torch.equal(sharp[1], render_crops([t], [crops[1]])[1][0])  # flipped, not ignored


@pytest.mark.parametrize("quality", [60, 80, 95])
@pytest.mark.parametrize("size", [(64, 96), (50, 70)])  # whole macroblocks, and edges libjpeg replicates
def test_jpeg_round_trip_matches_opencv(quality, size):
    img = photo(*size, seed=quality)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    ref = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    mine = jpeg_round_trip(torch.from_numpy(img).permute(2, 0, 1)[None].float(), [quality])[0]
    mine8 = mine.byte().permute(1, 2, 0).numpy()
    assert psnr(mine8, ref) > 40
    assert abs(psnr(mine8, img) - psnr(ref, img)) < 0.5  # the same loss, not merely close pixels
    assert psnr(mine8, img) < 60  # and a loss there is: the round trip is not the identity


def test_jpeg_round_trip_takes_each_samples_quality():
    img = torch.from_numpy(photo(32, 32)).permute(2, 0, 1)[None].float()
    both = jpeg_round_trip(torch.cat([img, img]), [30, 95])
    assert torch.equal(both[0], jpeg_round_trip(img, [30])[0])
    assert torch.equal(both[1], jpeg_round_trip(img, [95])[0])
    assert not torch.equal(both[0], both[1])


@pytest.mark.parametrize("scale", [0.5, 0.63, 0.9])
def test_area_weights_are_opencvs_inter_area(scale):
    img = np.random.default_rng(0).random((57, 83)).astype(np.float32)
    ref = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = ref.shape
    mine = area_matrix(57, h, scale) @ torch.from_numpy(img) @ area_matrix(83, w, scale).T
    assert np.abs(mine.numpy() - ref).max() < 1e-5


def test_a_weak_model_draws_weak_shakes_on_the_device_too():
    """The draw is the CPU's: ShakeModel settings reach the device renderer unchanged."""
    img = photo(160, 160)
    still = ShakeModel(sharp=1.0, noise=0.0, jpeg=0.0, scale=(1.0, 1.0))
    crop = plan_crop(img.shape, np.random.default_rng(0), 64, still)
    blur, sharp = render_crops([torch.from_numpy(img).permute(2, 0, 1)], [crop])
    assert torch.equal(blur, sharp)
