from __future__ import annotations

import json
from dataclasses import replace

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


def _named(split: str, count: int, folder: str = "set") -> list[str]:
    """File names whose FOLDER/FILE falls in ``split`` by the held-out rule."""
    from mimocli.shake import split_of

    names = (f"s{i}.png" for i in range(10_000))
    return [n for n in names if split_of(f"{folder}/{n}") == split][:count]


@pytest.fixture
def sharp_photos(tmp_path):
    folder = tmp_path / "photos" / "set"
    folder.mkdir(parents=True)
    for split, count in (("train", 3), ("val", 1), ("test", 1)):
        for i, name in enumerate(_named(split, count)):
            write_image(folder / name, photo(90, 150 if split != "train" or i else 1400, seed=i))
    return tmp_path / "photos"


def test_a_pack_keeps_the_split_and_the_photos_and_fits_its_budget(sharp_photos, tmp_path):
    import hashlib
    import zipfile

    from mimocli.errors import ImageError
    from mimocli.evaluate import psnr
    from mimocli.shake import split_of
    from mimocli.train_data import PackedPhoto, find_photos, pack_photos, read_photo

    s = pack_photos([sharp_photos], tmp_path / "a.zip", long_side=700)
    assert s.photos == 4 and s.by_split == {"train": 3, "val": 1} and s.resized == 1 and s.quality == 95
    loose = {f"set/{p.name}": p for p in find_photos([sharp_photos])}
    packed = find_photos([tmp_path / "a.zip"])
    assert all(isinstance(p, PackedPhoto) for p in packed)
    assert sorted(p.name for p in packed) == sorted(n for n, p in loose.items() if split_of(p) != "test")
    for p in packed:
        assert split_of(p) == split_of(loose[p.name])  # the same FOLDER/FILE, the same split
        original, back = read_photo(loose[p.name]), read_photo(p)
        if original.shape[1] > 700:  # the wide one: scaled to the long side
            assert back.shape == (45, 700, 3)
        else:
            assert back.shape == original.shape and psnr(back, original) > 33  # q95 of a noisy test image
    # the same photos give the same bytes; a smaller budget lowers the quality, and it is recorded
    pack_photos([sharp_photos], tmp_path / "b.zip", long_side=700)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "a.zip") == digest(tmp_path / "b.zip")
    small = pack_photos([sharp_photos], tmp_path / "c.zip", long_side=700, max_bytes=s.bytes - 5000)
    assert small.quality < 95 and small.bytes <= s.bytes - 5000
    with zipfile.ZipFile(tmp_path / "c.zip") as z:
        assert json.loads(z.read("mimo-pack.json"))["quality"] == small.quality
    with pytest.raises(ImageError, match="do not fit"):
        pack_photos([sharp_photos], tmp_path / "d.zip", max_bytes=1000)
    assert not (tmp_path / "d.zip").exists()
    (tmp_path / "bad.zip").write_bytes(b"PK not really")
    with pytest.raises(ImageError, match="not a readable zip"):
        find_photos([tmp_path / "bad.zip"])


def test_training_renders_the_shake_on_the_device_from_a_pack(sharp_photos, tmp_path):
    from mimocli.train_data import pack_photos

    pack = pack_photos([sharp_photos], tmp_path / "p.zip").path
    opts = TrainOptions(
        steps=4, batch=2, crop=32, lr=1e-3, log_every=1, checkpoint_every=2, val_every=2, shake=True,
        shake_on="device", schedule="cosine",
    )  # fmt: skip
    s = train(_model(), [pack], tmp_path / "dev", opts, "cpu")
    assert s.steps == 4 and np.isfinite(s.final_loss) and s.val_psnr is not None
    state = torch.load(tmp_path / "dev/checkpoint.pt", weights_only=True)
    assert state["options"]["shake_on"] == "device" and state["options"]["schedule"] == "cosine"
    lrs = [h["lr"] for h in s.history if "lr" in h]
    assert lrs[0] < 1e-3 and lrs[-1] == pytest.approx(1e-5)  # cosine down to a hundredth at the last step
    # auto settles to the CPU's faster renderer, recorded; a resume with another renderer is refused
    auto = replace(opts, shake_on="auto", steps=2)
    train(_model(), [pack], tmp_path / "auto", auto, "cpu")
    state = torch.load(tmp_path / "auto/checkpoint.pt", weights_only=True)
    assert state["options"]["shake_on"] == "workers"
    with pytest.raises(OutputError, match=r"other options \(shake_on\)"):
        train(_model(), [pack], tmp_path / "auto", replace(opts, steps=3), "cpu", resume=True)
    train(_model(), [pack], tmp_path / "auto", replace(auto, steps=3), "cpu", resume=True)  # auto: workers again


def test_a_time_limit_ends_the_run_as_if_its_step_were_the_last(pairs, tmp_path):
    opts = TrainOptions(steps=50, batch=1, crop=32, log_every=10, checkpoint_every=100, val_every=100)
    s = train(_model(), pairs, tmp_path / "run", opts, "cpu", val=pairs, time_limit=0.0)
    assert s.steps == 1 and s.history[-1]["step"] == 1 and "val_psnr" in s.history[-1]
    assert torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)["step"] == 1
    assert (tmp_path / "run/model.safetensors").exists()


@pytest.mark.slow
def test_the_gpu_recipe_toy_run_hands_back_a_model(sharp_photos, tmp_path):
    """weights/gpu_recipe.sh at toy scale on the CPU, as a GPU machine would run it: no network,
    nothing installed, and neither PyAV nor gdown (which its image lacks) imported."""
    import hashlib
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mimocli.train_data import pack_photos
    from mimocli.weights import load_weights

    pack = pack_photos([sharp_photos], tmp_path / "p.zip").path
    refuse = tmp_path / "refuse"
    refuse.mkdir()
    for name in ("av", "gdown"):
        (refuse / f"{name}.py").write_text(f"raise ImportError('{name} is not on a GPU machine')\n")
    recipe = Path(__file__).resolve().parents[1] / "weights/gpu_recipe.sh"
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(refuse)}
    args = [str(recipe), str(out), "--minutes", "0.3", "--device", "cpu", "--pack", pack, "--crop", "32"]
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "recipe.json").read_text())
    assert [x["name"] for x in record["race"]] == ["mimo-unet", "mimo-unet-6x24", "mimo-unet-lite"]
    assert all(np.isfinite(x["val_psnr"]) and x["steps"] >= 1 for x in record["race"])
    winner = max(record["race"], key=lambda x: x["val_psnr"])
    assert record["winner"] == winner["name"] and record["final"]["steps"] >= 1
    assert record["compile"] is False and record["pack"]["sha256"]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == record["final"]["steps"] and "val_psnr" in lines[-1]
    weights = load_file(str(out / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values())
    loaded = load_weights(weights=out / "model.safetensors", device="cpu")  # as mimo deblur --weights loads it
    assert loaded.model.num_res == winner["num_res"]
    assert read_image(out / "curve.png").pixels.shape == (400, 800, 3)
    # a later run continues these weights: no race of shapes, the same shape goes on
    more = tmp_path / "more"
    r = subprocess.run([args[0], str(more), *args[2:], "--init", str(out / "model.safetensors")],
                       env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert r.returncode == 0, r.stderr
    again = json.loads((more / "recipe.json").read_text())
    assert again["init"]["sha256"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert [x["num_res"] for x in again["race"]] == [winner["num_res"]] and again["final"]["steps"] >= 1
    r = subprocess.run([str(recipe), str(tmp_path / "o2"), "--pack", str(tmp_path / "none.zip"), "--device", "cpu"],
                       env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1 and "none.zip: no such pack" in r.stderr
    # shipping what came back: refused, and nothing written, unless it beats the bundled lite on validation
    import shutil

    root = tmp_path / "checkout"
    (root / "weights").mkdir(parents=True)
    (root / "mimocli/bundled").mkdir(parents=True)
    shutil.copyfile(
        recipe.parents[1] / "mimocli/bundled/mimo-unet-lite.safetensors",
        root / "mimocli/bundled/mimo-unet-lite.safetensors",
    )
    row = {"num_res": winner["num_res"], "base_channel": winner["base_channel"], "summary": "toy"}
    (root / "weights/registry.json").write_text(json.dumps({"toy": row}))
    ship = [sys.executable, str(recipe.parent / "bundle_gpu.py"), str(out), "--key", "toy", "--data", str(sharp_photos)]
    r = subprocess.run([*ship, "--root", str(root)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "no better than mimo-unet-lite" in r.stderr, r.stderr
    assert "px: mimo-unet-lite" in r.stdout  # the scores it compared, printed first
    assert sorted(p.name for p in (root / "mimocli/bundled").iterdir()) == ["mimo-unet-lite.safetensors"]
    assert json.loads((root / "weights/registry.json").read_text()) == {"toy": row}


def test_train_cli_reads_a_pack_and_renders_where_asked(sharp_photos, tmp_path):
    from mimocli.train_data import pack_photos

    pack = pack_photos([sharp_photos], tmp_path / "p.zip").path
    common = ("--steps", "2", "--batch", "1", "--crop", "32", "--variant", "lite")
    r = run("train", pack, "--shake", "--shake-on", "device", "--schedule", "cosine", "--out", tmp_path / "a", *common)
    assert r.exit_code == 0, r.output
    state = torch.load(tmp_path / "a/checkpoint.pt", weights_only=True)
    assert state["options"]["shake_on"] == "device" and state["options"]["schedule"] == "cosine"
    r = run("train", pack, "--shake", "--shake-on", "gpu", "--out", tmp_path / "b", *common)
    assert r.exit_code == 2 and "use one of auto, device, workers" in flat(r.output)
    r = run("train", pack, "--out", tmp_path / "c", *common)
    assert r.exit_code == 2 and "a pack holds sharp photos: add --shake" in flat(r.output)
