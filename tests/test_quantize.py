"""int8 on the CPU: calibration, the cache (damaged and stale files refused), quality and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mimocli import quantize as qz
from mimocli.device import resolve_precision
from mimocli.engine import Deblurrer, build_deblurrer
from mimocli.errors import DeviceError
from mimocli.settings import RunSettings

from .conftest import photo, tiny_model
from .test_cli import run


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def test_the_int8_model_is_cached_and_a_damaged_or_stale_file_is_not_trusted(tmp_path):
    model = tiny_model()
    images = [photo(96, 128, seed=i) for i in range(2)]
    first, said = qz.quantized_for(model, images, ["a", "b"], cache=tmp_path)
    assert "calibrated now on a, b" in said
    again, said = qz.quantized_for(model, cache=tmp_path)
    assert "calibrated before" in said
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(first(x)[2], again(x)[2])  # the stored model is the one made
    assert not torch.fx.config.do_not_emit_stack_traces  # FX's setting as it was: traces for others

    (path,) = tmp_path.glob("*.pt")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert qz.load(model, path, qz.state_sha256(model)) is None  # damaged: sha256
    assert "calibrated now" in qz.quantized_for(model, cache=tmp_path)[1]

    record = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**record, "torch": "1.0"}))
    assert qz.load(model, path, qz.state_sha256(model)) is None  # made by another torch: stale
    other = tiny_model(seed=5)
    assert qz.cache_key(qz.state_sha256(other)) != path.stem  # other weights: another file


def test_int8_tiles_ensembles_and_stays_close_to_fp32(monkeypatch, tmp_path):
    monkeypatch.setattr(qz, "cache_folder", lambda *_: tmp_path)
    img = photo(96, 128)
    exact = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0)(img).image
    int8 = Deblurrer(tiny_model(), device="cpu", precision="int8", tile=0)
    assert int8.settings["precision"] == "int8" and "calibrated now" in int8.precision_reason
    whole = int8(img)
    assert whole.image.shape == img.shape and _psnr(whole.image, exact) > 35
    tiled = Deblurrer(tiny_model(), device="cpu", precision="int8", tile=64, tile_overlap=16)(img)
    assert tiled.tiles > 1 and _psnr(tiled.image, whole.image) > 35
    ens = Deblurrer(tiny_model(), device="cpu", precision="int8", tile=0, ensemble=True)(img)
    assert _psnr(ens.image, Deblurrer(tiny_model(), device="cpu", precision="fp32", ensemble=True)(img).image) > 35
    with pytest.raises(DeviceError, match="int8 runs on the CPU"):
        resolve_precision("int8", torch.device("cuda"))


@pytest.mark.shared
@pytest.mark.slow
def test_int8_quality_on_the_real_pairs(shared):
    """The bundled model in int8 against fp32 on the real GoPro pairs: within 0.1 dB of fp32's PSNR
    against the sharp image, and at least 40 dB from fp32's output (calibrated on its own image)."""
    from mimocli.evaluate import evaluate_pair, find_pairs
    from mimocli.images import read_image
    from mimocli.weights import load_weights

    model = load_weights("lite", "cpu").model
    fp32 = Deblurrer(model, device="cpu", precision="fp32", tile=0)
    int8 = Deblurrer(model, device="cpu", precision="int8", tile=0)
    for pair in find_pairs(shared / "data" / "pairs"):
        a, b = evaluate_pair(pair, fp32), evaluate_pair(pair, int8)
        assert abs(a.psnr - b.psnr) < 0.1, (pair.name, a.psnr, b.psnr)
        blur = read_image(pair.blur).pixels
        assert _psnr(int8(blur).image, fp32(blur).image) >= 40, pair.name


def test_mimo_quantize_calibrates_on_your_photos_and_says_what_it_costs(tmp_path, tiny_weights):
    from mimocli.images import write_image

    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(4):
        write_image(folder / f"p{i}.png", photo(64, 96, seed=i))
    r = run("quantize", "--weights", tiny_weights, "--calibrate", folder, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["calibrated_on"] == ["p0.png", "p2.png"] and set(info["psnr_vs_float"]) == {"p1.png", "p3.png"}
    assert all(p > 30 for p in info["psnr_vs_float"].values())
    r = run("deblur", folder / "p1.png", "-o", tmp_path / "out", "-w", tiny_weights, "-p", "int8", "-v")
    assert r.exit_code == 0, r.output
    assert "int8 (int8, calibrated before" in r.stderr  # the file mimo quantize made
    r = run("quantize", "--weights", tiny_weights, "--calibrate", tmp_path / "nothing")
    assert r.exit_code == 1 and "not a folder" in r.stderr
    r = run("deblur", folder / "p1.png", "-o", tmp_path / "gpu", "-w", tiny_weights, "-p", "int8", "-d", "cuda")
    assert r.exit_code == 1


def test_auto_uses_int8_only_when_allowed_and_measured_faster(monkeypatch, tmp_path):
    from mimocli import calibrate

    monkeypatch.setattr(qz, "cache_folder", lambda *_: tmp_path)
    monkeypatch.setattr(calibrate, "cache_file", lambda *_: tmp_path / "precision.json")
    images = [photo(64, 96)]
    qz.quantized_for(tiny_model(), images, ["a"])  # made, but auto not allowed
    assert build_deblurrer(tiny_model(), RunSettings(device="cpu")).dtype != torch.qint8

    timings = {"float": 1.0, "int8": 0.3}
    monkeypatch.setattr(calibrate, "time_int8", lambda *a: dict(timings))
    qz.quantized_for(tiny_model(), images, ["a"], auto=True)  # mimo quantize --auto
    d = build_deblurrer(tiny_model(), RunSettings(device="cpu"))
    assert d.dtype == torch.qint8 and "0.30x" in d.precision_reason and d.settings["precision"] == "int8"
    assert d(photo(32, 48)).image.shape == (32, 48, 3)
    (tmp_path / "precision.json").unlink()
    timings.update(int8=1.2)  # slower here: float it is
    assert build_deblurrer(tiny_model(), RunSettings(device="cpu")).dtype != torch.qint8
    assert (
        build_deblurrer(tiny_model(), RunSettings(device="cpu", precision="fp32")).dtype == torch.float32
    )  # asked: no int8
