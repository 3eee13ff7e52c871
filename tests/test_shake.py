from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mimocli.arch import MIMOUNet
from mimocli.errors import OutputError
from mimocli.evaluate import psnr
from mimocli.images import read_image, write_image
from mimocli.shake import ShakeModel, camera_path, homographies, shake_crop, shake_region, split_of
from mimocli.synth import ShakeOptions, synth_from_stills
from mimocli.train import TrainOptions, train
from mimocli.train_data import ShakeData, find_photos

from .conftest import photo
from .test_cli import flat, run


def test_split_rule_is_by_folder_and_name_only():
    names = [f"set{i % 3}/{i:04d}.jpg" for i in range(2000)]
    counts = Counter(split_of(n) for n in names)
    assert 0.08 < counts["test"] / 2000 < 0.12 and 0.03 < counts["val"] / 2000 < 0.07
    # the same photo falls in the same split wherever the dataset lies
    assert all(split_of(Path("/a/b") / n) == split_of(Path("elsewhere") / n) for n in names[:50])


def test_camera_path_has_its_length():
    rng = np.random.default_rng(0)
    path = camera_path(rng, 20.0)
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    assert steps.sum() == pytest.approx(20.0, rel=1e-6)


def test_homographies_rotate_about_the_principal_point():
    # pure roll of 1 degree about (50, 40): that point stays, a point 100 px right moves ~1.75 px down
    maps = homographies(np.zeros((1, 2)), np.array([np.radians(1.0)]), np.zeros(1), 500.0, (50.0, 40.0))
    p = maps[0] @ [50, 40, 1.0]
    assert p[:2] / p[2] == pytest.approx([50, 40])
    q = maps[0] @ [150, 40, 1.0]
    assert q[1] / q[2] - 40 == pytest.approx(100 * np.sin(np.radians(1.0)), rel=1e-3)
    # pure yaw moves the centre by focal * tan(angle) = the path's pixels
    maps = homographies(np.array([[7.0, 0.0]]), np.zeros(1), np.zeros(1), 500.0, (50.0, 40.0))
    p = maps[0] @ [50, 40, 1.0]
    assert p[0] / p[2] - 50 == pytest.approx(7.0, rel=1e-6)


def test_no_blur_keeps_the_photo_and_blur_lowers_psnr():
    img = photo(96, 128)
    still = ShakeModel(sharp=1.0, noise=0.0, jpeg=0.0)
    blur, sharp, shake = shake_region(img, np.random.default_rng(0), still)
    assert np.array_equal(blur, img) and np.array_equal(sharp, img) and shake.samples == 1
    strong = ShakeModel(sharp=0.0, weak=0.0, length=(12.0, 12.0), noise=0.0, jpeg=0.0)
    blur, sharp, shake = shake_region(img, np.random.default_rng(1), strong)
    assert np.array_equal(sharp, img) and shake.samples > 10
    assert psnr(blur, img) < 35


def test_roll_makes_the_blur_vary_across_the_frame():
    rolled = ShakeModel(sharp=0.0, weak=0.0, length=(4.0, 4.0), roll=6.0, noise=0.0, jpeg=0.0, linear=0.0)
    rng = np.random.default_rng(3)
    _, _, shake = shake_region(photo(400, 600), rng, rolled)
    centre, corner = shake.psf(300, 200, 41), shake.psf(0, 0, 41)
    assert centre.sum() == pytest.approx(1.0) and corner.sum() == pytest.approx(1.0)
    reach = lambda k: np.sqrt(((np.argwhere(k > 0) - 20) ** 2).sum(axis=1)).max()  # noqa: E731
    assert reach(corner) > reach(centre) + 2  # the corner travels further than the centre


def test_crops_are_deterministic_sized_and_aligned():
    img = photo(300, 420, seed=2)
    a = shake_crop(img, np.random.default_rng(7), 64)
    b = shake_crop(img, np.random.default_rng(7), 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape == a[1].shape == (64, 64, 3) and a[0].dtype == np.uint8
    # at scale 1 the sharp crop is a window of the photo, pixel for pixel
    one = ShakeModel(scale=(1.0, 1.0))
    _, sharp, _ = shake_crop(img, np.random.default_rng(1), 64, one)
    hits = [
        (y, x) for y in range(300 - 63) for x in range(420 - 63) if np.array_equal(img[y : y + 64, x : x + 64], sharp)
    ]
    assert len(hits) == 1
    with pytest.raises(ValueError, match="smaller than the 64px crop"):
        shake_crop(photo(40, 300), np.random.default_rng(0), 64)


def _photo_tree(root: Path, n: int = 24) -> Path:
    """Photos in two sub-folders, as datasets ship them."""
    for i in range(n):
        (root / f"set{i % 2}").mkdir(parents=True, exist_ok=True)
        write_image(root / f"set{i % 2}" / f"{i:03d}.png", photo(80, 96, seed=i))
    return root


def test_shake_data_batches_depend_only_on_the_generator(tmp_path):
    photos = find_photos([_photo_tree(tmp_path / "photos", 4)])
    assert len(photos) == 4 and photos[0].parent.name == "set0"
    data = ShakeData(photos, 32)
    a = data.batch(np.random.default_rng([0, 5]), 3, 32, True)
    b = data.batch(np.random.default_rng([0, 5]), 3, 32, True)
    assert a[0].shape == (3, 3, 32, 32) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    data.close()


def test_train_on_shaken_photos_validates_on_its_split_and_never_reads_the_test_split(tmp_path, monkeypatch):
    root = _photo_tree(tmp_path / "photos")
    splits = Counter(split_of(p) for p in find_photos([root]))
    assert splits["train"] and splits["test"]  # the tree exercises the rule
    seen: list[Path] = []
    original = ShakeData._load
    monkeypatch.setattr(ShakeData, "_load", lambda self, i: seen.append(self.photos[i]) or original(self, i))
    opts = TrainOptions(steps=6, batch=2, crop=32, lr=1e-3, shake=True, val_every=3, checkpoint_every=3)
    torch.manual_seed(0)
    s = train(MIMOUNet(1, 8), [root], tmp_path / "run", opts, "cpu")
    assert seen and all(split_of(p) != "test" for p in seen)
    if splits["val"]:
        assert s.best_val_psnr is not None and (tmp_path / "run/best.safetensors").exists()
    # a resumed shake run continues; a run with other data options is refused
    longer = TrainOptions(steps=8, batch=2, crop=32, lr=1e-3, shake=True, val_every=3, checkpoint_every=3)
    assert train(MIMOUNet(1, 8), [root], tmp_path / "run", longer, "cpu", resume=True).resumed_from == 6
    nchw = TrainOptions(steps=10, batch=2, crop=32, lr=1e-3, shake=True, channels_last=False)
    with pytest.raises(OutputError, match=r"other options \(channels_last\)"):
        train(MIMOUNet(1, 8), [root], tmp_path / "run", nchw, "cpu", resume=True)
    easier = TrainOptions(steps=10, batch=2, crop=32, lr=1e-3, shake=True, max_blur=8.0)
    with pytest.raises(OutputError, match=r"other options \(max_blur\)"):
        train(MIMOUNet(1, 8), [root], tmp_path / "run", easier, "cpu", resume=True)


def test_cli_train_shake_and_synth_split(tmp_path):
    root = _photo_tree(tmp_path / "photos")
    r = run("train", root, "--shake", "--out", tmp_path / "run", "--variant", "lite", "--steps", "2", "--batch", "1",
            "--crop", "32", "--max-blur", "8", "--json", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["steps"] == 2 and summary["cpu_seconds"] > 0
    r = run("train", root, "--shake", "--synthesize", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "exclude" in flat(r.output)

    # mimo synth descends into the folders; --split test keeps only the held-out photos
    r = run("synth", "--shake", root, tmp_path / "test", "--split", "test", "--vary", "--json")
    assert r.exit_code == 0, r.output
    names = json.loads(r.stdout)["names"]
    expected = sorted(p.stem for p in find_photos([root]) if split_of(p) == "test")
    assert sorted(names) == expected
    blur = read_image(tmp_path / "test/blur" / f"{names[0]}.png").pixels
    kernel = read_image(tmp_path / "test/kernel" / f"{names[0]}.png").pixels
    assert blur.shape == (80, 96, 3) and kernel.shape == (31, 31) and kernel.max() == 255
    r = run("synth", "--shake", root, tmp_path / "bad", "--split", "holdout")
    assert r.exit_code == 2 and "train, val, test" in flat(r.output)
    r = run("synth", "--shake", tmp_path / "missing", tmp_path / "none")
    assert r.exit_code == 1 and "no such file or folder" in flat(r.stderr)


def test_synth_stills_reproducible_across_folder_layouts(tmp_path):
    root = _photo_tree(tmp_path / "photos", 4)
    opts = ShakeOptions(kernel=15, noise=1.0, seed=2)
    synth_from_stills([root], tmp_path / "a", opts)
    synth_from_stills([root / "set1", root / "set0"], tmp_path / "b", opts)
    for name in ("000", "003"):
        one = read_image(tmp_path / "a/blur" / f"{name}.png").pixels
        assert np.array_equal(one, read_image(tmp_path / "b/blur" / f"{name}.png").pixels)


def test_the_blur_is_centred_on_the_sharp_target():
    # the mean pose is the identity: every drawn shake's kernel has its centre of mass on the target
    # pixel, so the sharp photo is aligned with the blur (no shift a model cannot see)
    model = ShakeModel(sharp=0.0, weak=0.0, length=(8.0, 36.0), roll=0.0, push=0.0, noise=0.0, jpeg=0.0)
    rng = np.random.default_rng(5)
    for _ in range(8):
        _, _, shake = shake_region(photo(200, 240), rng, model)
        k = shake.psf(120, 100, 81)
        ys, xs = np.mgrid[:81, :81]
        assert k.sum() == pytest.approx(1.0)
        assert (k * xs).sum() == pytest.approx(40, abs=0.05) and (k * ys).sum() == pytest.approx(40, abs=0.05)
