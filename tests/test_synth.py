from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mimocli.evaluate import find_pairs
from mimocli.images import read_image, write_image
from mimocli.synth import (
    AverageOptions,
    ShakeOptions,
    average_frames,
    shake_blur,
    shake_kernel,
    shake_trajectory,
    synth_from_stills,
    synth_from_video,
)
from mimocli.video import VideoOptions, open_source

from .clips import make_clip
from .conftest import photo
from .test_cli import flat, run


def _frames(folder, n, h=20, w=24, dtype=np.uint8):
    rng = np.random.default_rng(5)
    peak = np.iinfo(dtype).max
    arrays = [rng.integers(0, peak + 1, (h, w, 3), dtype=dtype) for _ in range(n)]
    folder.mkdir()
    for i, a in enumerate(arrays):
        write_image(folder / f"f{i}.png", a)  # natural order: f2 before f10
    return arrays


def test_pairs_follow_the_averaging_formula_exactly(tmp_path):
    arrays = _frames(tmp_path / "frames", 23)
    summary = synth_from_video(tmp_path / "frames", tmp_path / "out", AverageOptions(frames=5, stride=4))
    # windows start at 0, 4, 8, 12, 16 (16 + 5 <= 23; 20 + 5 > 23)
    assert summary.pairs == 5 and summary.names == ["000002", "000006", "000010", "000014", "000018"]
    for k, name in enumerate(summary.names):
        window = arrays[4 * k : 4 * k + 5]
        expected = np.rint(np.sum([a.astype(np.int64) for a in window], axis=0) / 5).astype(np.uint8)
        assert np.array_equal(read_image(tmp_path / "out/blur" / f"{name}.png").pixels, expected)
        assert np.array_equal(read_image(tmp_path / "out/sharp" / f"{name}.png").pixels, window[2])
    assert [p.name for p in find_pairs(tmp_path / "out")] == [f"{n}.png" for n in summary.names]


def test_linear_light_averaging_and_16_bits():
    a = np.full((2, 2, 3), 0, dtype=np.uint16)
    b = np.full((2, 2, 3), 65535, dtype=np.uint16)
    assert average_frames([a, b])[0, 0, 0] == 32768  # 32767.5 rounds half to even
    lin = average_frames([a, b], linear=True, gamma=2.2)
    assert lin[0, 0, 0] == round(0.5 ** (1 / 2.2) * 65535)  # brighter than the gamma-space mean
    x = np.array([[[10, 200, 255]]], dtype=np.uint8)
    y = np.array([[[20, 100, 0]]], dtype=np.uint8)
    expect = np.rint((((x / 255.0) ** 2.2 + (y / 255.0) ** 2.2) / 2) ** (1 / 2.2) * 255)
    assert average_frames([x, y], linear=True).tolist() == expect.astype(np.uint8).tolist()
    with pytest.raises(ValueError, match="differ"):
        average_frames([x, x[..., :2]])


def test_pairs_from_a_real_video_and_resume(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=20, size=(64, 48))
    source = open_source(src, VideoOptions())  # the colour conversion `mimo video` uses
    decoded = [f.pixels for f in source.decode()]
    source.close()
    assert len(decoded) == 20
    out = tmp_path / "pairs"
    r = run("synth", src, out, "--frames", "7", "--limit", "2", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["pairs"] == 2 and info["names"] == ["000003", "000010"]
    assert np.array_equal(read_image(out / "sharp/000010.png").pixels, decoded[10])
    assert np.array_equal(read_image(out / "blur/000003.png").pixels, average_frames(decoded[0:7]))

    r = run("synth", src, out)
    assert r.exit_code == 1 and "already holds pairs" in flat(r.stderr) and "--resume" in flat(r.stderr)
    (out / "blur/000010.png").unlink()
    r = run("synth", src, out, "--resume", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["skipped"] == 1 and info["pairs"] == 1  # 000003 kept, 000010 made again; 20 frames: two windows
    r = run("synth", src, out, "--frames", "4", "--overwrite")
    assert r.exit_code == 2 and "odd" in flat(r.output)
    r = run("synth", src, tmp_path / "p2", "--frames", "21")
    assert r.exit_code == 1 and "fewer than 21 frames" in flat(r.stderr)
    r = run("synth", tmp_path / "missing.mp4", tmp_path / "p3")
    assert r.exit_code == 1 and "missing.mp4" in flat(r.stderr)


def test_shake_kernels_and_blur():
    rng = np.random.default_rng(0)
    path = shake_trajectory(rng, 30.0)
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    assert steps.sum() == pytest.approx(30.0)  # the path has the length asked for, at constant speed
    k = shake_kernel(path, 31)
    assert k.shape == (31, 31) and k.sum() == pytest.approx(1.0) and k.min() >= 0
    assert (k > 0).sum() > 20  # a stroke, not a dot
    half = shake_kernel(path, 31, exposure=0.5)
    assert (half > 0).sum() < (k > 0).sum()
    # a one-pixel kernel changes nothing; a shifted delta shifts the image
    img = photo(40, 50)
    assert np.array_equal(shake_blur(img, np.ones((1, 1))), img)
    delta = np.zeros((3, 3))
    delta[1, 2] = 1.0  # convolution with this moves content one pixel to the right
    moved = shake_blur(img, delta)
    assert np.array_equal(moved[:, 1:], img[:, :-1])
    # the blur is the kernel's convolution, as OpenCV computes it directly
    direct = cv2.filter2D(img.astype(np.float64) / 255, -1, k[::-1, ::-1].copy(), borderType=cv2.BORDER_REFLECT)
    assert np.array_equal(shake_blur(img, k), np.rint(np.clip(direct, 0, 1) * 255).astype(np.uint8))


def test_pairs_from_stills_are_reproducible(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "a.png", photo(48, 64))
    write_image(photos / "b.jpg", photo(40, 56, seed=1))
    (photos / "broken.png").write_bytes(b"not a png")
    opts = ShakeOptions(kernel=15, noise=2.0, jpeg=80, seed=4)
    errors = []
    s1 = synth_from_stills([photos], tmp_path / "one", opts, on_error=errors.append)
    assert s1.pairs == 2 and s1.names == ["a", "b"] and len(errors) == 1 and "broken.png" in str(errors[0])
    s2 = synth_from_stills([photos / "b.jpg", photos / "a.png"], tmp_path / "two", opts, on_error=errors.append)
    for name in ("a", "b"):
        for kind in ("blur", "sharp", "kernel"):
            one = read_image(tmp_path / "one" / kind / f"{name}.png").pixels
            assert np.array_equal(one, read_image(tmp_path / "two" / kind / f"{name}.png").pixels)
    assert s2.pairs == 2
    drawn = json.loads((tmp_path / "one/kernel/a.json").read_text())  # what each pair's blur was
    assert drawn == json.loads((tmp_path / "two/kernel/a.json").read_text())
    assert drawn["length"] == pytest.approx(14.0) and drawn["noise"] == pytest.approx(2.0) and drawn["jpeg"] == 80
    sharp = read_image(tmp_path / "one/sharp/a.png").pixels
    assert np.array_equal(sharp, photo(48, 64))
    other = synth_from_stills([photos / "a.png"], tmp_path / "three", ShakeOptions(kernel=15, seed=5))
    assert other.pairs == 1
    assert not np.array_equal(
        read_image(tmp_path / "one/kernel/a.png").pixels, read_image(tmp_path / "three/kernel/a.png").pixels
    )

    r = run("synth", "--shake", photos / "a.png", photos / "b.jpg", tmp_path / "cli", "--kernel", "9", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["names"] == ["a", "b"]
    r = run("synth", "--shake", photos, tmp_path / "cli2")
    assert r.exit_code == 1 and "broken.png" in flat(r.stderr)  # reported, the others written
    assert (tmp_path / "cli2/blur/a.png").exists()
    r = run("synth", photos / "a.png", photos / "b.jpg", tmp_path / "x")
    assert r.exit_code == 2 and "--shake" in flat(r.output)
