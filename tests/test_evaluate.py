from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mimocli.engine import Deblurrer
from mimocli.errors import ImageError
from mimocli.evaluate import evaluate_pair, find_pairs, psnr, quantize, ssim
from mimocli.images import write_image

from .clips import identity_weights, small_weights
from .conftest import photo
from .test_cli import flat, run


def test_psnr_by_hand():
    a = np.zeros((8, 8, 3), dtype=np.uint8)
    assert psnr(a, a + 5) == pytest.approx(20 * math.log10(255 / 5))  # MSE 25: 34.151 dB
    b = a.copy()
    b[:4] = 10  # half the pixels off by 10: MSE 50
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 50))
    assert psnr(a, a) == math.inf
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, a[:4])


def _ssim_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 written out: an explicit 11x11 Gaussian-weighted window at every pixel
    whose window lies inside the image."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = x.astype(np.float64), y.astype(np.float64)
    vals = []
    for i in range(5, x.shape[0] - 5):
        for j in range(5, x.shape[1] - 5):
            px, py = x[i - 5 : i + 6, j - 5 : j + 6], y[i - 5 : i + 6, j - 5 : j + 6]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_by_definition():
    rng = np.random.default_rng(1)
    x = photo(24, 30)
    y = np.clip(x.astype(int) + rng.integers(-20, 21, x.shape), 0, 255).astype(np.uint8)
    expected = np.mean([_ssim_by_definition(x[..., c], y[..., c]) for c in range(3)])
    assert ssim(x, y) == pytest.approx(expected, abs=1e-9)
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x[..., 0], y[..., 0]) == pytest.approx(_ssim_by_definition(x[..., 0], y[..., 0]), abs=1e-9)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[:10], y[:10])


def test_quantize_rounds_as_the_authors_do():
    t = torch.tensor([-0.1, 0.0, 0.49 / 255, 0.5 / 255, 1.49 / 255, 100.5 / 255, 1.0, 1.7]).reshape(1, 1, 1, 8)
    q = quantize(t.expand(1, 3, 1, 8).contiguous())
    assert q.dtype == np.uint8 and q.shape == (1, 8, 3)
    assert q[0, :, 0].tolist() == [0, 0, 0, 1, 1, 101, 255, 255]


def _pair(folder: Path, blur_name: str, sharp_name: str, img: np.ndarray, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / blur_name, img)
    write_image(folder / sharp_name, photo(*img.shape[:2], seed=seed + 1))


def test_find_pairs_in_every_layout(tmp_path):
    img = photo(16, 16)
    gopro = tmp_path / "gopro"
    for seq in ("GOPR0384_11_00", "GOPR0385_11_01"):
        for n in ("000001.png", "000002.png"):
            (gopro / seq / "blur").mkdir(parents=True, exist_ok=True)
            (gopro / seq / "sharp").mkdir(parents=True, exist_ok=True)
            write_image(gopro / seq / "blur" / n, img)
            write_image(gopro / seq / "sharp" / n, img)
    pairs = find_pairs(gopro)
    assert [p.name for p in pairs] == [
        "GOPR0384_11_00/000001.png",
        "GOPR0384_11_00/000002.png",
        "GOPR0385_11_01/000001.png",
        "GOPR0385_11_01/000002.png",
    ]
    assert pairs[0].sharp == gopro / "GOPR0384_11_00/sharp/000001.png"
    assert [p.name for p in find_pairs(gopro / "GOPR0385_11_01")] == ["000001.png", "000002.png"]

    flat_pairs = tmp_path / "pairs"
    _pair(flat_pairs / "b_scene", "blur.png", "sharp.png", img)
    _pair(flat_pairs / "a_scene", "blur.jpg", "sharp.png", img)
    (flat_pairs / "notes").mkdir()
    assert [p.name for p in find_pairs(flat_pairs)] == ["a_scene", "b_scene"]
    assert [p.name for p in find_pairs(flat_pairs / "a_scene")] == ["a_scene"]

    write_image(gopro / "GOPR0384_11_00" / "blur" / "000003.png", img)
    with pytest.raises(ImageError, match="000003.png: no sharp image"):
        find_pairs(gopro)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no blurry/sharp pairs"):
        find_pairs(tmp_path / "empty")
    with pytest.raises(ImageError, match="not a folder"):
        find_pairs(tmp_path / "missing")


@pytest.mark.shared
def test_eval_on_the_real_pairs_matches_hand_computed_psnr(shared, tmp_path):
    """A network that returns its input scores exactly what the blurry input scores, and those
    are the PSNRs stated in ../shared/data/README.md (24.05, 25.11, 26.87 dB), computed by hand here."""
    weights = identity_weights(tmp_path / "id.safetensors")
    data = shared / "data/pairs"
    out_csv = tmp_path / "scores.csv"
    r = run("eval", data, "-w", weights, "--device", "cpu", "--csv", out_csv, "--json", "--quiet")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    got = {i["name"]: i for i in info["images"]}
    stated = {"gopro_GOPR0384_11_00_000001": 24.05, "gopro_flower": 25.11, "gopro_crop256_000008": 26.87}
    assert set(got) == set(stated)
    from mimocli.images import read_image

    for name, db in stated.items():
        blur = read_image(data / name / "blur.png").pixels[..., :3].astype(np.float64)
        sharp = read_image(data / name / "sharp.png").pixels[..., :3].astype(np.float64)
        by_hand = 10 * np.log10(255**2 / np.mean((blur - sharp) ** 2))
        assert got[name]["blur_psnr"] == pytest.approx(by_hand, abs=1e-9)
        assert got[name]["psnr"] == pytest.approx(by_hand, abs=1e-9)  # identity network, 8-bit round trip
        assert round(by_hand, 2) == db
        assert got[name]["ssim"] == pytest.approx(got[name]["blur_ssim"], abs=1e-12)
    # SSIM of the flower pair as skimage 0.25 computes it (gaussian_weights, sigma 1.5, data_range 255)
    assert got["gopro_flower"]["blur_ssim"] == pytest.approx(0.8209874593052, abs=1e-10)
    assert info["mean"]["psnr"] == pytest.approx(np.mean([g["psnr"] for g in got.values()]))
    assert info["settings"]["precision"] == "fp32" and info["failed"] == 0

    rows = list(csv.DictReader(out_csv.open()))
    assert [r["name"] for r in rows] == sorted(stated) + ["mean"]
    assert float(rows[-1]["psnr"]) == pytest.approx(info["mean"]["psnr"], abs=1e-4)

    r = run("eval", data / "gopro_crop256_000008", "-w", weights, "--device", "cpu")  # RGBA pair, one folder
    assert r.exit_code == 0, r.output
    assert "26.87" in r.stdout and "mean of 1" in r.stdout


def test_eval_reports_a_bad_pair_and_scores_the_rest(tmp_path):
    data = tmp_path / "seq"
    (data / "blur").mkdir(parents=True)
    (data / "sharp").mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png"):
        write_image(data / "blur" / name, photo(32, 40))
        write_image(data / "sharp" / name, photo(32, 40, seed=2))
    (data / "blur" / "b.png").write_bytes(b"not a png")
    write_image(data / "sharp" / "c.png", photo(36, 40, seed=2))
    weights = small_weights(tmp_path / "w.safetensors")
    r = run("eval", data, "-w", weights, "--device", "cpu", "--ensemble", "--json")
    assert r.exit_code == 1
    info = json.loads(r.stdout)
    assert [i["name"] for i in info["images"]] == ["a.png"] and info["failed"] == 2
    assert info["settings"]["ensemble"] is True
    text = flat(r.stderr)
    assert "b.png" in text and "c.png: 40x32 but its sharp image is 40x36" in text

    r = run("eval", tmp_path / "nothing", "-w", weights)
    assert r.exit_code == 1 and "not a folder" in r.stderr
    r = run("eval", data, "-w", weights, "--csv", tmp_path)
    assert r.exit_code == 1 and "is a folder" in r.stderr


@pytest.mark.shared
@pytest.mark.slow
def test_bundled_model_on_the_real_pairs_offline(shared, monkeypatch):
    """The shipped mimo-unet-lite, offline, on the real GoPro pairs: better than the blurry input on
    every pair, the bar for it to stand in for MIMO-UNet+ (``"fallback": true``)."""
    from mimocli.weights import load_registry, load_weights

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    deblurrer = Deblurrer(load_weights("lite").model, device="cpu", precision="fp32", tile=0)
    gains = []
    for pair in find_pairs(shared / "data" / "pairs"):
        record = evaluate_pair(pair, deblurrer)
        gains.append(record.psnr - record.blur_psnr)
        assert gains[-1] > 0, (pair.name, record.psnr, record.blur_psnr)
    assert len(gains) == 3 and sum(gains) / len(gains) > 0.05, gains
    assert load_registry()["mimo-unet-lite"].fallback  # marked to stand in, as the README says
