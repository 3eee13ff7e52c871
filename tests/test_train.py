from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mimocli.arch import MIMOUNet
from mimocli.errors import OutputError
from mimocli.images import read_image, write_image
from mimocli.synth import ShakeOptions, synth_from_stills
from mimocli.train import TrainOptions, loss_fn, plot_history, train

from .conftest import photo
from .test_cli import flat, run


@pytest.fixture
def pairs(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        write_image(photos / f"p{i}.png", photo(48, 64, seed=i))
    synth_from_stills([photos], tmp_path / "pairs", ShakeOptions(kernel=9, seed=1))
    return tmp_path / "pairs"


def _model() -> MIMOUNet:
    torch.manual_seed(0)
    return MIMOUNet(1, 8)


def test_loss_by_hand():
    sharp = torch.rand(2, 3, 16, 24)
    outs = [sharp[..., ::4, ::4], sharp[..., ::2, ::2], sharp]
    assert float(loss_fn(outs, sharp)) == 0.0
    d = 0.25
    shifted = [o + d for o in outs]
    # content: 3 scales x mean |d|; spectrum: a constant offset only moves the DC term, by d*H*W,
    # and the mean runs over H x (W/2+1) complex values stored as 2 reals
    spectral = sum(d * h * w / (h * (w // 2 + 1) * 2) for h, w in ((4, 6), (8, 12), (16, 24)))
    assert float(loss_fn(shifted, sharp, fft_weight=0.1)) == pytest.approx(3 * d + 0.1 * spectral, rel=1e-5)
    assert float(loss_fn(shifted, sharp, fft_weight=0.0)) == pytest.approx(3 * d, rel=1e-6)


def test_a_tiny_model_lowers_its_loss(pairs, tmp_path):
    opts = TrainOptions(steps=40, batch=2, crop=32, lr=2e-3, log_every=1, checkpoint_every=100, val_every=20)
    s = train(_model(), pairs, tmp_path / "run", opts, "cpu", val=pairs)
    losses = [h["loss"] for h in s.history if "loss" in h]
    assert len(losses) == 40
    # the pairs blur with camera roll (non-uniform), which a 1-block, 8-channel model fits slowly
    assert np.mean(losses[-8:]) < 0.9 * np.mean(losses[:8])
    vals = [h["val_psnr"] for h in s.history if "val_psnr" in h]
    assert len(vals) == 2 and all(np.isfinite(vals)) and vals[1] > vals[0]
    assert s.best_val_psnr == max(vals) and (tmp_path / "run/best.safetensors").exists()
    assert s.cpu_seconds > 0 and all("cpu_seconds" in h for h in s.history)
    lines = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 41))
    assert read_image(tmp_path / "run/loss.png").pixels.shape == (400, 800, 3)
    weights = load_file(str(tmp_path / "run/model.safetensors"))
    assert "Encoder.0.layers.0.main.0.main.0.weight" in weights  # the authors' key names


def test_resumed_run_equals_an_uninterrupted_one(pairs, tmp_path):
    opts = TrainOptions(steps=10, batch=2, crop=32, lr=1e-3, log_every=1, checkpoint_every=4)
    whole = train(_model(), pairs, tmp_path / "whole", opts, "cpu")

    def stop_at_6(step, total, loss):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_model(), pairs, tmp_path / "cut", opts, "cpu", on_progress=stop_at_6)
    assert not (tmp_path / "cut/model.safetensors").exists()
    with pytest.raises(OutputError, match="holds a training run"):
        train(_model(), pairs, tmp_path / "cut", opts, "cpu")
    other = TrainOptions(steps=10, batch=2, crop=32, lr=5e-4, log_every=1, checkpoint_every=4)
    with pytest.raises(OutputError, match=r"other options \(lr\)"):
        train(_model(), pairs, tmp_path / "cut", other, "cpu", resume=True)

    resumed = train(MIMOUNet(1, 8), pairs, tmp_path / "cut", opts, "cpu", resume=True)
    assert resumed.resumed_from == 4
    a = load_file(str(tmp_path / "whole/model.safetensors"))
    b = load_file(str(tmp_path / "cut/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in x.items() if k not in ("seconds", "cpu_seconds", "data_wait")} for x in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)  # steps 5 and 6 logged once, not twice


def test_train_cli_and_the_weights_in_mimo_deblur(pairs, tmp_path):
    out = tmp_path / "run"
    args = ("train", pairs, "--out", out, "--variant", "base", "--steps", "3", "--batch", "1", "--crop", "32")
    r = run(*args, "--json", "--device", "cpu")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["steps"] == 3 and np.isfinite(info["final_loss"])
    r = run(*args)
    assert r.exit_code == 1 and "--resume" in flat(r.stderr)
    r = run(*args[:-6], "--steps", "5", "--batch", "1", "--crop", "32", "--resume", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["resumed_from"] == 3
    r = run("deblur", pairs / "blur/p0.png", "-o", tmp_path / "d.png", "-w", out / "model.safetensors", "--quiet")
    assert r.exit_code == 0, r.output
    assert read_image(tmp_path / "d.png").pixels.shape == (48, 64, 3)
    r = run("train", pairs, "--out", tmp_path / "r2", "--crop", "30")
    assert r.exit_code == 2 and "multiple of 4" in flat(r.output)
    r = run("train", pairs, "--out", tmp_path / "r3", "--crop", "128", "--steps", "1")
    assert r.exit_code == 1 and "smaller than the 128px crop" in flat(r.stderr)


def test_plot_survives_odd_histories(tmp_path):
    plot_history([], tmp_path / "a.png")
    plot_history([{"step": 1, "loss": 0.5}], tmp_path / "b.png")
    plot_history([{"step": 1, "loss": 0.5, "val_psnr": 20.0}, {"step": 2, "loss": 0.0}], tmp_path / "c.png")
    assert all((tmp_path / n).exists() for n in ("a.png", "b.png", "c.png"))


def test_train_synthesizes_pairs_from_sharp_photos(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        write_image(photos / f"s{i}.png", photo(40, 48, seed=i))
    out = tmp_path / "run"
    r = run("train", photos, "--synthesize", "--out", out, "--steps", "2", "--batch", "1", "--crop", "32", "--json")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "synth/blur").iterdir()) == ["s0.png", "s1.png"]
    assert (out / "model.safetensors").exists()


def test_pair_data_reads_on_demand_and_batches_do_not_depend_on_the_cache(pairs, tmp_path):
    from PIL import Image

    from mimocli.evaluate import find_pairs
    from mimocli.train_data import PairData
    from mimocli.train_data import header_size as _size

    found = find_pairs(pairs)
    cached, uncached = PairData(found, 32), PairData(found, 32, cache=0, workers=1)
    for step in range(5):
        a = cached.batch(np.random.default_rng([0, step]), 3, 32, True)
        b = uncached.batch(np.random.default_rng([0, step]), 3, 32, True)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert cached.load.cache_info().currsize <= len(found)
    cached.close()
    uncached.close()
    # sizes come from the headers, turned as read_image turns the pixels
    img = Image.fromarray(photo(30, 50))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "turned.jpg", exif=exif)
    assert _size(tmp_path / "turned.jpg") == read_image(tmp_path / "turned.jpg").pixels.shape[:2] == (50, 30)
