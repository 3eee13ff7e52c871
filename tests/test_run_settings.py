"""One run configuration, the library's photo job, and the GPU path's defects that a CPU can show."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from mimocli import device as dev
from mimocli import registry
from mimocli.arch import MIMOUNet
from mimocli.engine import Deblurrer, build_deblurrer, upload
from mimocli.errors import OutputError
from mimocli.images import read_image, write_image
from mimocli.paths import plan_jobs
from mimocli.photos import PhotoOptions, check_job, deblur_image
from mimocli.settings import RunSettings

from .conftest import Probe, SmallMemory, compiler_failing_with, photo, tiny_model


def test_run_settings_are_one_checked_value():
    run = RunSettings(device="cpu", precision="FP32", tile="Auto")
    assert (run.precision, run.tile) == ("fp32", "auto")
    assert run.replace(batch=4).batch == 4 and run.batch == 1
    with pytest.raises(AttributeError):
        run.tile = 3  # type: ignore[misc]
    for bad in ({"tile": -1}, {"tile": "big"}, {"tile_overlap": -2}, {"compile": "yes"}, {"batch": 0}):
        with pytest.raises(ValueError):
            RunSettings(**bad)  # type: ignore[arg-type]
    d = Deblurrer(tiny_model(), RunSettings(device="cpu", precision="fp32", tile=64), tile_overlap=16)
    assert (d.tile, d.tile_overlap, d.config.tile) == (64, 16, 64)


def test_deblurrer_leaves_the_callers_model_as_it_was():
    model = tiny_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = Deblurrer(model, device="cpu", precision="fp32", tile=0, channels_last=True, ensemble=True)
    d(photo(32, 32))
    assert model.training and not model.ensemble
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())  # not turned channels-last
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert d.model is not model and d.ensemble and not d.model.training


def test_gray_goes_to_the_device_as_one_dense_channel(monkeypatch):
    gray = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    expanded = gray.expand(-1, 3, -1, -1)
    # What pin_memory() does, a buffer with the source's strides and a copy into it, fails on the
    # stride-0 channel of an expanded gray image: the crash of gray photos on CUDA.
    with pytest.raises(RuntimeError):
        torch.empty_strided(expanded.shape, expanded.stride(), dtype=expanded.dtype).copy_(expanded)
    assert upload(expanded, torch.device("cpu")).stride()[1] != 0

    def no_pinning(self, *args, **kwargs):
        raise AssertionError("pinned memory is not used")

    monkeypatch.setattr(torch.Tensor, "pin_memory", no_pinning)
    d = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0)
    for img in (photo(24, 32)[:, :, 0], np.dstack([photo(24, 32)[:, :, 0], np.full((24, 32), 7, np.uint8)])):
        out = d(img).image
        assert out.shape == img.shape
    seen = []
    Deblurrer(Probe(lambda x: seen.append(tuple(x.shape))), device="cpu", precision="fp32", tile=0)(
        photo(24, 32)[:, :, 0]
    )
    assert seen == [(1, 3, 24, 32)]  # expanded on the device, after the copy


def test_non_finite_output_is_checked_in_one_synchronisation(monkeypatch):
    calls = []
    real = torch.Tensor.__bool__

    def counting(self):
        calls.append(1)
        return real(self)

    d = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0)
    monkeypatch.setattr(torch.Tensor, "__bool__", counting)
    d.run_tensor(torch.rand(1, 3, 16, 16))
    assert len(calls) == 1


def test_the_tile_an_out_of_memory_left_sticks():
    d = Deblurrer(SmallMemory(100 * 100), device="cpu", precision="fp32", tile=0, tile_overlap=16)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        first = d(photo(256, 256))
    assert first.tile_size <= 96
    d.model.sizes.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no second out-of-memory: it starts small
        again = d(photo(256, 256))
    assert again.tile_size == first.tile_size
    assert max(h * w for h, w in d.model.sizes) <= 100 * 100


def test_auto_precision_on_cuda_asks_the_chosen_gpu(monkeypatch):
    asked = []

    def capability(index):
        asked.append(index)
        return {0: (7, 5), 1: (8, 6)}[index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation says yes: not asked
    assert dev.resolve_precision("auto", torch.device("cuda:1")) == torch.bfloat16  # Ampere
    assert dev.resolve_precision("auto", torch.device("cuda:0")) == torch.float16  # Turing: no bf16 cores
    assert dev.resolve_precision("auto", torch.device("cuda")) == torch.float16  # the current one, 0
    assert asked == [1, 0, 0]
    assert dev.resolve_precision("bf16", torch.device("cuda:0")) == torch.bfloat16  # asked for: given


def test_free_memory_counts_the_allocators_cache_and_works_without_proc(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 30, 8 << 30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3 << 30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 << 30)
    assert dev.free_memory(torch.device("cuda:0")) == 3 << 30  # 1 free + 2 cached but unused

    real = dev.os.sysconf

    def mac_sysconf(name):
        if name == "SC_AVPHYS_PAGES":
            raise ValueError("unrecognized configuration name")
        return real(name)

    monkeypatch.setattr(dev.os, "sysconf", mac_sysconf)
    half = real("SC_PAGE_SIZE") * real("SC_PHYS_PAGES") // 2
    assert dev.free_memory(torch.device("cpu"), str(tmp_path / "no-meminfo")) == half
    one = dev.auto_tile(torch.device("cpu"), torch.float32)
    assert dev.auto_tile(torch.device("cpu"), torch.float32, batch=4) <= one // 2 + 4  # the batch shares it


def test_cudnn_autotune_is_scoped_to_the_call():
    torch.backends.cudnn.benchmark = False
    with dev.cudnn_autotune(torch.device("cuda")):
        assert torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.benchmark
    with dev.cudnn_autotune(torch.device("cpu")):
        assert not torch.backends.cudnn.benchmark


def test_compile_keeps_inductors_settings_and_device_faults_are_not_swallowed(monkeypatch):
    import torch._inductor.config as inductor

    before = inductor.freezing
    dev.compile_model(tiny_model(), torch.device("cpu"))
    assert inductor.freezing == before

    compiler_failing_with(monkeypatch, "CUDA error: an illegal memory access was encountered")
    d = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0, compile=True)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        d.run_tensor(torch.rand(1, 3, 16, 16))


def test_a_run_is_settled_once_without_touching_the_callers_deblurrer(monkeypatch):
    compiler_failing_with(monkeypatch, "no working C++ compiler")
    d = Deblurrer(tiny_model(), device="cpu", precision="fp32", compile=True)
    with pytest.warns(RuntimeWarning, match="running eager"):
        run = d.for_run(10, 48, 64, batch=2)  # the fallback happens here, before the run records it
    assert not run.compiled and run.settings["compile"] is False
    assert run.tile == 0  # auto, settled: 48x64 frames fit whole
    assert d.tile is None and d.compiled  # the caller's Deblurrer is as it was


def test_the_variant_means_the_same_from_python(tiny_weights):
    from mimocli.weights import load_registry, load_weights

    plusplus = load_weights("plusplus", "cpu", tiny_weights)
    plus = load_weights("plus", "cpu", tiny_weights)
    assert plusplus.model.ensemble and not plus.model.ensemble
    x = torch.rand(1, 3, 16, 24)
    with torch.inference_mode():
        ensembled = plusplus.model(x)[2]
        by_hand = Deblurrer(plus.model, device="cpu", precision="fp32", tile=0, ensemble=True).run_tensor(x)[0][2]
    assert torch.allclose(ensembled, by_hand, atol=1e-5)
    assert Deblurrer(plusplus.model, device="cpu", precision="fp32").ensemble
    # One table, read once: the variants and their weights come from the same rows.
    assert registry.table() is registry.table()
    rows = registry.table()
    assert {v.name for v in registry.VARIANTS} == set(rows)
    assert set(load_registry()) == {k for k, row in rows.items() if "sources" in row}
    assert registry.get_variant("++").weights_key == "mimo-unet-plus"


def test_the_photo_job_is_the_librarys(tmp_path):
    src = tmp_path / "a.png"
    write_image(src, photo(40, 56))
    (job,) = plan_jobs([str(src)])
    d = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0)
    loads = []

    def lazily() -> Deblurrer:
        loads.append(1)
        return d

    options = PhotoOptions(save_scales=True, compare=True)
    r = deblur_image(job, lazily, options, label="tiny")
    assert r.status == "ok" and (r.width, r.height) == (56, 40) and loads == [1]
    assert read_image(job.output).pixels.shape == (40, 56, 3)
    assert all(p.exists() for p in job.scales.values()) and job.compare is not None and job.compare.exists()
    assert deblur_image(job, lazily, PhotoOptions(skip_existing=True)).status == "skipped" and loads == [1]
    with pytest.raises(OutputError, match="already exists"):
        check_job(job, PhotoOptions())
    with pytest.raises(ValueError):
        PhotoOptions(overwrite=True, skip_existing=True)
    (bad,) = plan_jobs([str(tmp_path / "missing.png")])
    with pytest.raises(Exception, match="no such file"):
        deblur_image(bad, lazily)
    assert loads == [1]  # a bad file never loads the model


def test_ensemble_needs_a_mimo_unet():
    with pytest.raises(ValueError, match="needs a MIMOUNet or XYDeblur"):
        Deblurrer(nn.Conv2d(3, 3, 1), device="cpu", ensemble=True)
    m = MIMOUNet(1, 8, ensemble=True)
    assert copy.deepcopy(m).ensemble


def test_auto_precision_on_a_bf16_cpu_is_decided_by_measurement(monkeypatch, tmp_path):
    from mimocli import calibrate

    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda *a: True)  # the flags say bf16 is native
    timings = {"fp32": 1.0, "bf16": 1.6}
    calls = []

    def fake(model, channels_last):
        calls.append(channels_last)
        return dict(timings)

    monkeypatch.setattr(calibrate, "time_precisions", fake)
    auto = RunSettings(device="cpu")
    assert Deblurrer(tiny_model(), auto).dtype == torch.bfloat16 and calls == []  # a constructor never measures
    d = build_deblurrer(tiny_model(), auto)  # the one builder settles auto: measured once
    assert d.dtype == torch.float32 and "1.60x" in d.precision_reason and calls == [True]
    assert d.settled.precision == "fp32" and d.report()["precision"] == "fp32"
    assert build_deblurrer(tiny_model(), auto).dtype == torch.float32 and calls == [True]  # cached
    assert "measured before" in build_deblurrer(tiny_model(), auto).precision_reason
    assert build_deblurrer(tiny_model(), d.settled).dtype == torch.float32 and calls == [True]  # settled: as told
    assert build_deblurrer(tiny_model(), auto.replace(precision="bf16")).dtype == torch.bfloat16  # asked: no measuring
    assert calls == [True]
    # The measurements live beside the weights: in --cache-dir, or $MIMO_CACHE_DIR, when given.
    assert (tmp_path / "home" / "hf" / "assets" / "mimocli" / "default" / "precision.json").exists()
    build_deblurrer(tiny_model(), auto, tmp_path / "mine")
    assert (tmp_path / "mine" / "precision.json").exists() and calls == [True, True]
    monkeypatch.setenv("MIMO_CACHE_DIR", str(tmp_path / "env"))
    build_deblurrer(tiny_model(), auto)
    assert (tmp_path / "env" / "precision.json").exists() and len(calls) == 3
    monkeypatch.delenv("MIMO_CACHE_DIR")
    del calls[1:]

    cache = tmp_path / "precision.json"
    timings.update(bf16=0.5)
    dtype, reason = calibrate.cpu_precision(tiny_model(), True, cache)
    assert dtype == torch.bfloat16 and "0.50x" in reason and len(calls) == 2
    cache.write_text("{not json")  # a damaged cache is measured again, not trusted
    assert calibrate.cpu_precision(tiny_model(), True, cache)[0] == torch.bfloat16 and len(calls) == 3
    monkeypatch.setattr(torch, "__version__", "9.9.9")  # another torch: its own measurement
    calibrate.cpu_precision(tiny_model(), True, cache)
    assert len(calls) == 4 and len(json.loads(cache.read_text())) == 2
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda *a: False)
    assert build_deblurrer(tiny_model(), auto).dtype == torch.float32 and len(calls) == 4  # no bf16: no measuring


def test_an_output_another_run_wrote_meanwhile_is_kept_not_replaced(tmp_path):
    """Two runs writing one output at once: the later one, without --overwrite, fails naming the
    file instead of silently replacing the other's result (both used to exit 0)."""
    from mimocli.paths import plan_jobs
    from mimocli.photos import PhotoOptions, deblur_image

    from .conftest import digest

    src = write_image(tmp_path / "a.png", photo(16, 16))
    (job,) = plan_jobs([str(src)])

    class Raced(Deblurrer):
        def __call__(self, image, on_progress=None):  # the other run finishes first
            job.output.write_bytes(b"the other run's result")
            return super().__call__(image, on_progress)

    d = Raced(tiny_model(), device="cpu", precision="fp32")
    with pytest.raises(OutputError, match="already exists \\(another run wrote it meanwhile\\)"):
        deblur_image(job, d, PhotoOptions())
    assert job.output.read_bytes() == b"the other run's result"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no part left behind
    before = digest(job.output)
    deblur_image(job, d, PhotoOptions(overwrite=True))  # asked to replace: replaced
    assert digest(job.output) != before
