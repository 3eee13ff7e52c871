"""The OpenVINO backend (mimocli.openvino_backend, the openvino extra): the upstream outputs through
it, its IR cached by the weights, --backend on the command line, and --backend auto decided by
one measurement, cached and recorded. The suite runs with MIMO_OPENVINO=0 (conftest); these tests
let it through."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mimocli import calibrate
from mimocli import device as dev
from mimocli import openvino_backend as ovb
from mimocli.engine import Deblurrer, build_deblurrer, settle
from mimocli.errors import DeviceError
from mimocli.images import read_image, write_image
from mimocli.settings import RunSettings

from .conftest import photo, tiny_model
from .test_cli import flat, run

pytest.importorskip("openvino")


@pytest.fixture(autouse=True)
def _openvino(monkeypatch):
    monkeypatch.setenv("MIMO_OPENVINO", "1")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.shared
@pytest.mark.parametrize("network", ["mimo-unet", "xydeblur"])
def test_the_converted_network_gives_the_upstream_outputs(shared, tmp_path, network):
    """The parity fixtures through OpenVINO in fp32: every output within the tolerance the torch
    network meets (1e-4), after the IR went through the cache and came back."""
    from mimocli.weights import build_model

    folder = shared / "reference" / ("" if network == "mimo-unet" else "xydeblur")
    stem = "mimo_unet_random" if network == "mimo-unet" else "xydeblur_random"
    model, _ = build_model(load_file(folder / f"{stem}.safetensors"), "fixture")
    io = load_file(folder / f"{stem}_io.safetensors")
    _, said = ovb.converted_for(model, tmp_path)
    converted, again = ovb.converted_for(model, tmp_path)
    assert said == "OpenVINO, converted now" and again.startswith("OpenVINO, converted before")
    net = ovb.OpenVINONet(converted, torch.float32)
    for case in ("a", "b"):
        outs = net(io[f"{case}.input"].float())
        expected = [io[k] for k in sorted(io) if k.startswith(f"{case}.out")]
        assert len(outs) == len(expected) == 3
        for out, want in zip(outs, expected, strict=True):
            assert out.shape == want.shape and float((out - want).abs().max()) < 1e-4, case


def test_the_ir_is_cached_by_the_weights_and_a_damaged_or_stale_one_is_converted_again(tmp_path, monkeypatch):
    model = tiny_model()
    _, said = ovb.converted_for(model, tmp_path)
    assert said == "OpenVINO, converted now"
    (record,) = tmp_path.glob("*.json")
    info = json.loads(record.read_text())
    assert info["recipe"] == ovb.RECIPE and info["openvino"] == ovb.version()
    assert ovb.converted_for(model, tmp_path)[1].startswith("OpenVINO, converted before")
    # The weights kept in fp32 (OpenVINO's default would halve them to fp16): the .bin holds every
    # parameter at 4 bytes.
    params = sum(p.numel() for p in model.parameters())
    assert record.with_suffix(".bin").stat().st_size >= 4 * params
    weights = record.with_suffix(".bin")
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert ovb.converted_for(model, tmp_path)[1] == "OpenVINO, converted now"  # damaged: not trusted
    assert ovb.converted_for(tiny_model(seed=1), tmp_path)[1] == "OpenVINO, converted now"  # other weights
    monkeypatch.setattr(ovb, "version", lambda: "1999.0")
    assert ovb.load(tmp_path, record.stem, json.loads(record.read_text())["float_sha256"]) is None  # stale
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:  # a cache that cannot be written: converted, only not kept
        assert ovb.converted_for(model, read_only)[1] == "OpenVINO, converted now"
    finally:
        read_only.chmod(0o700)


def test_the_deblurrer_on_openvino_matches_torch_whole_tiled_and_with_the_ensemble():
    img = photo(72, 100)
    for changes in ({"tile": 0}, {"tile": 48, "tile_overlap": 16}, {"tile": 0, "ensemble": True}):
        torch_run = Deblurrer(tiny_model(), device="cpu", precision="fp32", backend="torch", **changes)
        ov_run = build_deblurrer(
            tiny_model(), RunSettings(device="cpu", precision="fp32", backend="openvino", **changes)
        )
        assert ov_run.backend == "openvino" and ov_run.settled.backend == "openvino"
        a, b = torch_run(img), ov_run(img)
        assert a.tiles == b.tiles and _psnr(a.image, b.image) > 60, changes
        assert set(a.scales) == set(b.scales) and all(_psnr(a.scales[k], b.scales[k]) > 60 for k in a.scales)
    # The same input twice: the same bytes.
    ov_run = build_deblurrer(tiny_model(), RunSettings(device="cpu", precision="fp32", backend="openvino"))
    assert np.array_equal(ov_run(img).image, ov_run(img).image)


def test_damaged_weights_are_refused_on_openvino_and_left_to_torch_by_auto(tmp_path):
    """OpenVINO's fused ReLU turns NaN into 0, so NaN weights would give a plausible image there:
    --backend openvino refuses them before any work, auto leaves them to torch, which fails on
    the NaN output as it always has."""
    from mimocli.errors import NotFiniteError

    model = tiny_model()
    with torch.no_grad():
        model.feat_extract[0].main[0].bias.fill_(float("nan"))
    net = ovb.OpenVINONet(ovb.convert(model), torch.float32)
    assert bool(torch.isfinite(net(torch.rand(1, 3, 32, 32))[-1]).all())  # why: NaN gone, silently
    with pytest.raises(NotFiniteError, match="the weights hold NaN/Inf values"):
        settle(model, RunSettings(device="cpu", precision="fp32", backend="openvino"), tmp_path)
    d = build_deblurrer(model, RunSettings(device="cpu", precision="fp32", tile=0), tmp_path)
    assert d.backend == "torch"
    with pytest.raises(NotFiniteError, match="in fp32 too"):
        d(photo(32, 32))


def _fake_timings(monkeypatch, torch_times: dict[str, float], ov_times: dict[str, float]) -> list[str]:
    calls: list[str] = []

    def torch_timer(model, channels_last):
        calls.append("torch")
        return dict(torch_times)

    def ov_timer(converted, precisions):
        calls.append("openvino")
        return {p: ov_times[p] for p in precisions}

    monkeypatch.setattr(calibrate, "time_precisions", torch_timer)
    monkeypatch.setattr(calibrate, "time_openvino", ov_timer)
    return calls


def test_backend_auto_is_decided_by_one_measurement_cached_and_settled(monkeypatch, tmp_path):
    calls = _fake_timings(monkeypatch, {"fp32": 1.0, "bf16": 0.6}, {"fp32": 0.8, "bf16": 0.3})
    auto = RunSettings(device="cpu", precision="fp32")
    assert Deblurrer(tiny_model(), auto).backend == "torch" and calls == []  # a constructor never measures
    d = build_deblurrer(tiny_model(), auto, tmp_path)
    assert (d.backend, d.settled.backend, d.report()["backend"]) == ("openvino", "openvino", "openvino")
    assert "OpenVINO fp32 takes 0.80x the time of fp32" in d.precision_reason and calls == ["torch", "openvino"]
    again = build_deblurrer(tiny_model(), auto, tmp_path)
    assert again.backend == "openvino" and "measured before" in again.precision_reason and len(calls) == 2
    assert build_deblurrer(tiny_model(), d.settled, tmp_path).backend == "openvino" and len(calls) == 2  # as told
    assert build_deblurrer(tiny_model(), auto.replace(backend="torch"), tmp_path).backend == "torch"
    assert len(calls) == 2
    # Within MARGIN of torch: torch stays (the default path).
    calls = _fake_timings(monkeypatch, {"fp32": 1.0, "bf16": 0.6}, {"fp32": 0.97, "bf16": 0.3})
    d = build_deblurrer(tiny_model(), auto, tmp_path / "other")
    assert d.backend == "torch" and "OpenVINO fp32 would take 0.97x the time of fp32" in d.precision_reason
    # Not installed (or turned off): torch, nothing measured; --compile never tries it.
    monkeypatch.setenv("MIMO_OPENVINO", "0")
    assert build_deblurrer(tiny_model(), auto, tmp_path / "none").backend == "torch" and len(calls) == 2
    monkeypatch.setenv("MIMO_OPENVINO", "1")
    assert settle(tiny_model(), auto.replace(compile=True), tmp_path / "c").settings.backend == "torch"
    assert len(calls) == 2


@pytest.mark.parametrize("ov_bf16", [True, False])
def test_precision_and_backend_auto_on_a_bf16_cpu_take_the_fastest_of_four(monkeypatch, tmp_path, ov_bf16):
    """With the CPU faked as having native bf16, both ways for OpenVINO's plugin: fp32 and bf16 on
    torch and OpenVINO are timed, the fastest taken; where OpenVINO cannot run bf16, torch's bf16 is
    weighed against its fp32 alone, and --backend openvino runs fp32."""
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda *a: True)
    monkeypatch.setattr(ovb, "has_bf16", lambda: ov_bf16)
    calls = _fake_timings(monkeypatch, {"fp32": 1.0, "bf16": 0.5}, {"fp32": 0.8, "bf16": 0.2})
    s = settle(tiny_model(), RunSettings(device="cpu"), tmp_path)
    if ov_bf16:
        assert (s.settings.backend, s.settings.precision) == ("openvino", "bf16") and s.openvino is not None
        assert "OpenVINO bf16 takes 0.20x the time of fp32" in s.reason and calls == ["torch", "openvino"]
    else:
        assert (s.settings.backend, s.settings.precision) == ("torch", "bf16") and s.openvino is None
        assert calls == ["torch"]
        forced = settle(tiny_model(), RunSettings(device="cpu", backend="openvino"), tmp_path)
        assert (forced.settings.backend, forced.settings.precision) == ("openvino", "fp32")
        with pytest.raises(DeviceError, match="OpenVINO runs bf16 only on a CPU that has it natively"):
            settle(tiny_model(), RunSettings(device="cpu", precision="bf16", backend="openvino"), tmp_path)


def test_the_real_measurement_times_both_backends(tmp_path):
    """Unfaked, on this machine: the timings are positive numbers, cached under their own keys."""
    choice = calibrate.cpu_choice(
        tiny_model(),
        True,
        ("fp32",),
        ("torch", "openvino"),
        lambda: ovb.converted_for(tiny_model(), tmp_path)[0],
        tmp_path / "precision.json",
    )
    assert choice[0] in ("torch", "openvino") and choice[1] == torch.float32
    known = json.loads((tmp_path / "precision.json").read_text())
    assert len(known) == 2 and all(t["fp32"] > 0 for t in known.values())
    assert any(f"OpenVINO {ovb.version()}" in k for k in known)


def test_mimo_deblur_backend_openvino_and_its_refusals(tmp_path, tiny_weights, monkeypatch):
    src = write_image(tmp_path / "a.png", photo(40, 52))

    def deblur(to: str, *args: str):  # type: ignore[no-untyped-def]
        return run("deblur", src, "-o", tmp_path / to, "-w", tiny_weights, "-d", "cpu", *args)

    r = deblur("ov.png", "-p", "fp32", "--backend", "openvino", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["backend"] == "openvino"
    v = deblur("v.png", "-p", "fp32", "--backend", "openvino", "-v")
    assert v.exit_code == 0 and "OpenVINO, converted before" in flat(v.output) and "backend: openvino" in v.output
    assert "channels-last" not in v.output  # a torch switch, meaningless here
    t = deblur("torch.png", "-p", "fp32", "--backend", "torch")
    assert t.exit_code == 0, t.output
    assert _psnr(read_image(tmp_path / "ov.png").pixels, read_image(tmp_path / "torch.png").pixels) > 50
    for args, said in (
        (("-p", "fp16"), "the OpenVINO backend runs fp32, bf16 and int8, not fp16 (use --backend torch)"),
        (("-p", "fp32", "--compile"), "OpenVINO compiles the network itself"),
    ):
        r = deblur("x.png", "--backend", "openvino", *args)
        assert r.exit_code != 0 and said in flat(r.output), r.output
    # int8 with --compile was a traceback (a ValueError); now one line too.
    r = deblur("x.png", "-p", "int8", "--compile")
    assert r.exit_code == 1 and "int8 runs eagerly, not compiled (drop --compile)" in flat(r.output), r.output
    r = deblur("x.png", "--backend", "nope")
    assert r.exit_code == 2 and "use one of auto, torch, openvino" in flat(r.output)
    monkeypatch.setenv("MIMO_OPENVINO", "0")
    r = deblur("x.png", "--backend", "openvino")
    said = 'the OpenVINO backend is not installed (pip install "mimocli[openvino]", or use --backend torch)'
    assert r.exit_code == 1 and said in flat(r.output), r.output
    assert not (tmp_path / "x.png").exists()


def test_mimo_bench_shows_the_openvino_path(tmp_path):
    r = run("bench", "--variant", "lite", "--device", "cpu", "--size", "64x48", "--iters", "2", "-p", "fp32")
    assert r.exit_code == 0, r.output
    r = run(
        *("bench", "--variant", "lite", "--device", "cpu", "--size", "64x48", "--iters", "2"), "--backend", "openvino"
    )
    assert r.exit_code == 0 and "OpenVINO fp32" in r.output, r.output
    r = run(
        *("bench", "--variant", "lite", "--device", "cpu", "--size", "64x48", "--iters", "2"), "--json", "-p", "fp32"
    )
    fast = [x for x in json.loads(r.stdout)["results"] if x["mode"] != "baseline"]
    assert fast and all(x["backend"] in ("torch", "openvino") for x in fast)


def test_mimo_env_names_openvino_or_how_to_get_it(monkeypatch):
    r = run("env", "--json")
    info = json.loads(r.stdout)["openvino"]
    assert info["version"] == ovb.version() and isinstance(info["cpu_bf16"], bool)
    assert f"OpenVINO: {ovb.version()}, bf16 on CPU: " in run("env").stdout
    monkeypatch.setenv("MIMO_OPENVINO", "0")
    assert json.loads(run("env", "--json").stdout)["openvino"] is None
    assert 'OpenVINO: not installed (pip install "mimocli[openvino]"' in run("env").stdout


def _known(path, entries: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))


def test_int8_on_openvino_is_calibrated_once_and_chosen_against_torch_by_measurement(tmp_path):
    model = tiny_model()
    asked = RunSettings(device="cpu", precision="int8", backend="openvino", tile=0)
    s = settle(model, asked, tmp_path)
    assert (s.settings.backend, s.settings.precision, s.int8) == ("openvino", "int8", None)
    assert s.reason == "OpenVINO int8, calibrated now on calibration.jpg"
    (record,) = (tmp_path / "openvino").glob("*-int8.json")
    assert json.loads(record.read_text())["calibrated_on"] == ["calibration.jpg"]
    d = build_deblurrer(model, asked, tmp_path)
    assert d.precision_reason.startswith("OpenVINO int8, calibrated before")
    img = photo(64, 80)
    exact = Deblurrer(model, device="cpu", precision="fp32", backend="torch")(img).image
    assert _psnr(d(img).image, exact) > 35
    # --backend auto: the two int8 networks timed once (here: the cached figures, both ways).
    entry = f"{calibrate.key(model, False)}, int8 against OpenVINO {ovb.version()} int8 ({ovb.INT8_RECIPE})"
    measurements = tmp_path / "precision.json"
    auto = asked.replace(backend="auto")
    for times, chosen in (({"torch": 1.0, "openvino": 0.5}, "openvino"), ({"torch": 1.0, "openvino": 0.99}, "torch")):
        _known(measurements, {entry: times})
        s = settle(model, auto, tmp_path)
        assert s.settings.backend == chosen and "measured before" in s.reason
        assert (s.int8 is None) == (chosen == "openvino") and (s.openvino is None) == (chosen == "torch")
    plain = settle(model, auto.replace(backend="torch"), tmp_path)
    assert plain.settings.backend == "torch" and plain.int8 is not None


def test_precision_auto_takes_openvinos_int8_where_mimo_quantize_auto_allowed_it(tmp_path, tiny_weights):
    from mimocli.weights import load_weights

    r = run("quantize", "-w", tiny_weights, "--auto", "--json", "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)  # the record alone on stdout: NNCF's progress bars kept off it
    assert info["openvino"]["note"] == "OpenVINO int8, calibrated now on calibration.jpg"
    assert info["openvino"]["psnr_vs_float"]["calibration.jpg"] > 35
    model = load_weights(None, "cpu", tiny_weights).model
    key = calibrate.key(model, True)
    known = {
        key: {"fp32": 1.0, "bf16": 2.0},
        f"{key}, OpenVINO {ovb.version()}": {"fp32": 0.5, "bf16": 2.0},
        f"{key}, OpenVINO int8 against OpenVINO {ovb.version()} fp32": {"float": 1.0, "int8": 0.3},
    }
    _known(tmp_path / "cache" / "precision.json", known)
    s = settle(model, RunSettings(device="cpu"), tmp_path / "cache")
    assert (s.settings.precision, s.settings.backend) == ("int8", "openvino"), s.reason
    assert "OpenVINO int8 (allowed by mimo quantize --auto) takes 0.30x the time of OpenVINO" in s.reason
    d = build_deblurrer(model, s.settings, tmp_path / "cache")  # as a worker or a resumed run is given it
    assert (d.backend, d.settled.precision) == ("openvino", "int8") and d(photo(32, 40)).image.shape == (32, 40, 3)


@pytest.mark.shared
@pytest.mark.slow
def test_openvino_int8_quality_on_the_real_pairs(shared, tmp_path):
    """The bundled model in OpenVINO's int8 against fp32 on the real GoPro pairs, by the bars
    torch's int8 meets (test_quantize): within 0.1 dB of fp32's PSNR against the sharp image, and
    at least 40 dB from fp32's output. (Its recipe was chosen on ../shared/data/photos, not these.)"""
    from mimocli.evaluate import evaluate_pair, find_pairs
    from mimocli.weights import load_weights

    model = load_weights("lite", "cpu").model
    fp32 = Deblurrer(model, device="cpu", precision="fp32", tile=0, backend="torch")
    int8 = build_deblurrer(model, RunSettings(device="cpu", precision="int8", tile=0, backend="openvino"), tmp_path)
    for pair in find_pairs(shared / "data" / "pairs"):
        a, b = evaluate_pair(pair, fp32), evaluate_pair(pair, int8)
        assert abs(a.psnr - b.psnr) < 0.1, (pair.name, a.psnr, b.psnr)
        blur = read_image(pair.blur).pixels
        assert _psnr(int8(blur).image, fp32(blur).image) >= 40, pair.name


def test_the_network_is_compiled_once_per_shape_and_each_shape_gives_what_a_fresh_one_gives():
    converted = ovb.convert(tiny_model())
    net = ovb.OpenVINONet(converted, torch.float32)
    a, b = torch.rand(1, 3, 32, 48), torch.rand(2, 3, 40, 40)
    first = net(a)
    assert [o.shape[0] for o in net(b)] == [2, 2, 2] and len(net._compiled) == 2
    again, fresh = net(a), ovb.OpenVINONet(converted, torch.float32)(a)
    assert all(torch.equal(p, q) and torch.equal(p, r) for p, q, r in zip(first, again, fresh, strict=True))
    for i in range(6):
        net(torch.rand(1, 3, 16 + 4 * i, 16))
    assert len(net._compiled) == net.SHAPES  # the least recently used go
