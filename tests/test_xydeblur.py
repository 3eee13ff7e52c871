"""XYDeblur (Ji et al., CVPR 2022) beside MIMO-UNet: the network against the upstream
implementation's outputs, recognised from its weights, and run by everything that runs MIMO-UNet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mimocli.arch import MIMOUNet
from mimocli.checkpoints import build_model
from mimocli.engine import Deblurrer
from mimocli.errors import VideoError, WeightsError
from mimocli.images import read_image, write_image
from mimocli.registry import detect_variant, get_variant
from mimocli.xydeblur import XYDeblur

from .clips import make_clip
from .conftest import photo
from .test_cli import run


def tiny_xy(seed: int = 0) -> XYDeblur:
    torch.manual_seed(seed)
    return XYDeblur(num_res=1, base_channel=8).eval()


@pytest.fixture
def xy_weights(tmp_path: Path) -> Path:
    path = tmp_path / "xy.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_xy().state_dict().items()}, path)
    return path


@pytest.fixture
def reference(shared: Path) -> Path:
    return shared / "reference" / "xydeblur"


def test_the_network_gives_the_upstream_outputs(reference):
    """Random weights under the authors' keys (fp16 values, loaded as fp32) and the upstream
    forward's three outputs for two inputs, one with odd quarter sizes (25x19)."""
    sd = load_file(reference / "xydeblur_random.safetensors")
    io = load_file(reference / "xydeblur_random_io.safetensors")
    model, variant = build_model(sd, "fixture")
    assert isinstance(model, XYDeblur) and variant.name == "xydeblur"
    assert sum(p.numel() for p in model.parameters()) == 4_918_627
    with torch.no_grad():
        for case in ("a", "b"):
            outs = model(io[f"{case}.input"])
            for i, out in enumerate(outs):
                assert float((out - io[f"{case}.out_{i}"]).abs().max()) < 1e-4, (case, i)


def test_each_architecture_is_recognised_from_its_weights_and_a_foreign_one_refused(reference):
    manifest = json.loads((reference / "state_dict_manifest.json").read_text())
    shapes = dict(manifest["tensors"])  # the authors' keys, shapes only
    v = detect_variant(shapes)
    assert (v.name, v.architecture, v.num_res, v.base_channel) == ("xydeblur", "xydeblur", 6, 32)
    assert detect_variant({f"module.{k}": t for k, t in shapes.items()}).name == "xydeblur"
    small = detect_variant(tiny_xy().state_dict())
    assert (small.name, small.architecture, small.num_res, small.base_channel) == ("xydeblur-r1c8", "xydeblur", 1, 8)
    assert detect_variant(MIMOUNet(8).state_dict()).name == "mimo-unet"
    assert detect_variant(MIMOUNet(3, 16).state_dict()).architecture == "mimo-unet"
    with pytest.raises(WeightsError, match="not a MIMO-UNet or any network mimocli runs") as e:
        detect_variant(torch.nn.Conv2d(3, 3, 3).state_dict())
    assert "XYDeblur" in e.value.message and "\n" not in e.value.message
    model, _ = build_model(tiny_xy().state_dict())
    assert isinstance(model, XYDeblur)
    broken = tiny_xy().state_dict()
    broken.pop("Decoder1_4.main.0.bias")
    with pytest.raises(WeightsError, match="does not fit XYDeblur with 1 blocks of 8 channels"):
        build_model(broken)
    assert get_variant("xy").arch.name == "XYDeblur"


def test_the_deblurrer_runs_it_whole_tiled_in_int8_and_as_an_ensemble():
    model = tiny_xy()
    image = photo(72, 100)
    whole = Deblurrer(model, device="cpu", precision="fp32", tile=0)(image)
    with torch.no_grad():
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        ref = model(x)
    expect = np.rint(ref[2][0].clamp(0, 1).permute(1, 2, 0).numpy() * 255)
    assert np.abs(whole.image.astype(int) - expect.astype(int)).max() <= 1
    # The residuals come back as the authors show them: (r + 1) / 2, mid-grey for no change.
    rx = np.rint(((ref[0][0] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy() * 255)
    assert set(whole.scales) == {"residual-x", "residual-y"}
    assert np.abs(whole.scales["residual-x"].astype(int) - rx.astype(int)).max() <= 1
    tiled = Deblurrer(model, device="cpu", precision="fp32", tile=32, tile_overlap=16)(image)
    assert tiled.tiles > 1 and tiled.image.shape == whole.image.shape
    diff = tiled.image.astype(float) - whole.image.astype(float)
    assert 10 * np.log10(255**2 / max(np.mean(diff**2), 1e-12)) > 40  # blended tiles agree with the whole
    odd = Deblurrer(model, device="cpu", precision="fp32")(photo(37, 51))  # padded to 4s and cropped back
    assert odd.image.shape == (37, 51, 3) and odd.scales["residual-y"].shape == (37, 51, 3)
    ensemble = Deblurrer(model, device="cpu", precision="fp32", ensemble=True)(image)
    assert ensemble.image.shape == image.shape and not np.array_equal(ensemble.image, whole.image)
    int8 = Deblurrer(model, device="cpu", precision="int8")(image)  # calibrated on the bundled photo
    diff = int8.image.astype(float) - whole.image.astype(float)
    assert 10 * np.log10(255**2 / np.mean(diff**2)) > 30  # measured 40 dB (MIMO-UNet alike: 37 dB)


def test_mimo_deblur_runs_the_authors_network_tiled_in_int8_with_its_residuals(reference, tmp_path):
    weights = reference / "xydeblur_random.safetensors"
    src = write_image(tmp_path / "street.png", photo(96, 128))
    r = run(
        "deblur", src, "--variant", "xydeblur", "-w", weights, "--tile", "64", "--save-scales", "--json", "-d", "cpu"
    )
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    assert record["tiles"] > 1 and record["weights"]["variant"] == "xydeblur"
    assert set(record["scales"]) == {"residual-x", "residual-y"}
    for path in record["scales"].values():
        assert Path(path).name.startswith("street_deblurred_residual-")
        assert read_image(Path(path)).pixels.shape == (96, 128, 3)
    again = run("deblur", tmp_path, "-o", tmp_path / "again", "-w", weights, "--json")  # its outputs are not inputs
    assert [json.loads(line)["input"] for line in again.stdout.splitlines()] == [str(src)]
    r = run("deblur", src, "-o", tmp_path / "int8.png", "-w", weights, "--precision", "int8", "--json", "-d", "cpu")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["precision"] == "int8"


def test_video_and_eval_run_it(tmp_path, xy_weights):
    src = make_clip(tmp_path / "in.mp4", frames=6, size=(64, 48))
    r = run("video", src, tmp_path / "out.mkv", "-w", xy_weights, "-c", "ffv1", "--json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["frames"] == 6
    r = run("video", src, tmp_path / "scales.mkv", "-w", xy_weights, "--save-scales", "-q")
    assert r.exit_code == 1 and "only MIMO-UNet makes" in r.stderr
    with pytest.raises(VideoError, match="only MIMO-UNet"):
        from mimocli.video import VideoOptions, deblur_video

        deblur_video(src, tmp_path / "api.mkv", Deblurrer(tiny_xy(), device="cpu"), VideoOptions(save_scales=True))
    pairs = tmp_path / "pairs"
    for kind, seed in (("blur", 0), ("sharp", 1)):
        (pairs / "s" / kind).mkdir(parents=True)
        write_image(pairs / "s" / kind / "000001.png", photo(48, 64, seed=seed))
    r = run("eval", pairs, "-w", xy_weights, "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["images"]) == 1


def test_training_uses_the_papers_loss_and_exports_weights_recognised_as_xydeblur(tmp_path):
    from mimocli.train import TrainOptions, image_loss, loss_fn, loss_for, train

    assert loss_for(tiny_xy()) is image_loss and loss_for(MIMOUNet(1)) is loss_fn
    outs = [torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5)]
    assert float(image_loss(outs, torch.zeros(1, 3, 8, 8))) == pytest.approx(0.5)  # the image alone
    data = tmp_path / "pairs"
    for kind, seed in (("blur", 0), ("sharp", 1)):
        for i in range(2):
            (data / f"s{i}" / kind).mkdir(parents=True, exist_ok=True)
            write_image(data / f"s{i}" / kind / "000001.png", photo(64, 64, seed=seed + 10 * i))
    model = tiny_xy()
    summary = train(model, data, tmp_path / "out", TrainOptions(steps=3, batch=2, crop=32, val_every=3, log_every=1))
    assert summary.steps == 3 and np.isfinite(summary.final_loss)
    exported = tmp_path / "out" / "model.safetensors"
    assert detect_variant(load_file(exported)).architecture == "xydeblur"
    r = run("deblur", data / "s0" / "blur" / "000001.png", "-o", tmp_path / "t.png", "-w", exported, "-q")
    assert r.exit_code == 0, r.output
    # The command line: --variant xydeblur trains the network at its published shape from scratch.
    r = run("train", data, "-o", tmp_path / "cli", "--variant", "xy", "-n", "1", "-b", "1", "--crop", "32", "--json")
    assert r.exit_code == 0, r.output
    trained = load_file(tmp_path / "cli" / "model.safetensors")
    assert (detect_variant(trained).name, len(trained)) == ("xydeblur", 160)


def test_the_python_api_and_mimo_quantize_take_it(tmp_path, xy_weights):
    import mimocli

    model = mimocli.load_model(weights=xy_weights)  # recognised from its keys
    assert isinstance(model, XYDeblur) and (model.num_res, model.base_channel) == (1, 8)
    sharp = mimocli.deblur(photo(40, 56), weights=xy_weights, device="cpu")
    assert sharp.shape == (40, 56, 3) and sharp.dtype == np.uint8
    src = write_image(tmp_path / "a.png", photo(16, 16))
    r = run("deblur", src, "--dry-run", "--save-scales", "--json", "-w", xy_weights)  # the header read, nothing loaded
    assert r.exit_code == 0, r.output
    assert [Path(p).name for p in json.loads(r.stdout)["writes"]] == [
        "a_deblurred.png",
        "a_deblurred_residual-x.png",
        "a_deblurred_residual-y.png",
    ]
    r = run("quantize", "-w", xy_weights, "--json", "-q")
    assert r.exit_code == 0, r.output
    assert all(v > 25 for v in json.loads(r.stdout)["psnr_vs_float"].values())
