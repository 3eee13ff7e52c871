from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from mimocli import engine
from mimocli.arch import DIHEDRAL, MIMOUNet
from mimocli.device import auto_tile, choose_tile, cpu_has_native_bf16, resolve_device, resolve_precision
from mimocli.engine import Deblurrer
from mimocli.errors import DeviceError

from .conftest import Probe, SmallMemory, compiler_failing_with, photo, tiny_model


def test_uint8_rgb_roundtrip_layout():
    img = photo(37, 53)  # odd sizes: padded to 40x56 inside, cropped back
    r = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0)(img)
    assert r.image.shape == img.shape and r.image.dtype == np.uint8
    assert r.scales[0.5].shape == (19, 27, 3) and r.scales[0.25].shape == (10, 14, 3)


def test_sixteen_bit_stays_sixteen_bit_with_rounding():
    img = photo(32, 32, dtype=np.uint16)
    model = tiny_model()
    r = Deblurrer(model, device="cpu", precision="fp32", tile=0)(img)
    assert r.image.dtype == np.uint16
    with torch.inference_mode():
        ref = model(torch.from_numpy(img.astype(np.float32) / 65535).permute(2, 0, 1)[None])[2]
    expected = np.rint(ref[0].permute(1, 2, 0).clamp(0, 1).numpy() * 65535).astype(np.uint16)
    assert np.abs(r.image.astype(int) - expected.astype(int)).max() <= 1


def test_grayscale_stays_grayscale_and_alpha_is_untouched():
    gray = photo(40, 44)[:, :, 0]
    r = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0)(gray)
    assert r.image.shape == gray.shape and r.scales[0.5].shape == (20, 22)
    rgba = photo(40, 44, channels=4)
    rgba[:, :, 3] = np.arange(44, dtype=np.uint8)[None, :] * 5
    r = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0)(rgba)
    assert r.image.shape == rgba.shape
    assert np.array_equal(r.image[:, :, 3], rgba[:, :, 3])
    assert np.array_equal(r.scales[0.25][:, :, 3], rgba[::4, ::4, 3])
    la = np.stack([gray, rgba[:, :, 3]], axis=-1)
    r = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0)(la)
    assert r.image.shape == la.shape and np.array_equal(r.image[:, :, 1], la[:, :, 1])


def test_ensemble_is_the_mean_over_eight_symmetries():
    model = tiny_model()
    x = torch.rand(1, 3, 24, 32)
    outs, _, _ = Deblurrer(model, device="cpu", precision="fp32", tile=0, ensemble=True).run_tensor(x)
    acc = torch.zeros_like(x)
    with torch.inference_mode():
        for k, flip in DIHEDRAL:
            y = torch.rot90(x, k, (-2, -1))
            y = torch.flip(y, (-1,)) if flip else y
            o = model(y)[2]
            o = torch.flip(o, (-1,)) if flip else o
            acc += torch.rot90(o, -k, (-2, -1))
    assert torch.allclose(outs[2], acc / 8, atol=1e-5)
    assert len(DIHEDRAL) == 8 and len(set(DIHEDRAL)) == 8


def test_half_precision_overflow_is_redone_in_fp32():
    model = tiny_model()
    with torch.no_grad():  # activations of ~1e6 overflow float16 (max 65504) but not float32
        model.feat_extract[0].main[0].weight.mul_(3000.0)
        model.feat_extract[0].main[0].bias.add_(1e5)
    img = photo(32, 32)
    ref = Deblurrer(model, device="cpu", precision="fp32", tile=0)(img)
    d = Deblurrer(model, device="cpu", precision="fp16", tile=0)
    with pytest.warns(RuntimeWarning, match="NaN/Inf.*redone in fp32"):
        r = d(img)
    assert r.fp32_fallbacks == 1
    assert np.array_equal(r.image, ref.image)


def test_bf16_stays_close_to_fp32():
    img = photo(48, 64)
    ref = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0)(img).image.astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = Deblurrer(tiny_model(), device="cpu", precision="bf16", tile=0)(img).image.astype(int)
    assert np.abs(got - ref).mean() < 2


def test_out_of_memory_retries_with_smaller_tiles():
    img = photo(256, 256)
    small = SmallMemory(100 * 100)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        r = Deblurrer(small, device="cpu", precision="fp32", tile=0, tile_overlap=16)(img)
    assert r.tile_size <= 96 and r.tiles > 1
    ref = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0)(img)
    assert np.abs(r.image.astype(int) - ref.image.astype(int)).max() <= 3

    hopeless = SmallMemory(10)
    with pytest.raises(DeviceError, match="out of memory"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Deblurrer(hopeless, device="cpu", precision="fp32", tile=0)(img)


def test_devices_and_precisions():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    native = cpu_has_native_bf16()
    assert resolve_precision("auto", torch.device("cpu")) == (torch.bfloat16 if native else torch.float32)
    assert resolve_precision("auto", torch.device("mps")) == torch.float32
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(DeviceError, match="unknown precision"):
        resolve_precision("int4", torch.device("cpu"))  # int8 is a precision now (issue 14)
    with pytest.raises(DeviceError, match="unknown device|unsupported device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA was requested"):
            resolve_device("cuda:1")
    full = auto_tile(torch.device("cpu"), torch.float32)
    assert full % 4 == 0 and full >= 64
    assert auto_tile(torch.device("cpu"), torch.bfloat16) >= full  # half the bytes per pixel
    cpu = torch.device("cpu")
    assert choose_tile(cpu, torch.float32, 720, 1280) == full  # a 720p photo runs whole if it fits
    assert choose_tile(cpu, torch.float32, 3000, 4000) == min(full, 512)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    img = photo(96, 128)
    ref = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0)(img).image.astype(int)
    for precision in ("fp32", "auto"):
        got = Deblurrer(tiny_model(), device="cuda", precision=precision, tile=64, tile_overlap=16)(img).image.astype(
            int
        )
        assert np.abs(got - ref).mean() < 2


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("MIMO_CPU_BF16")  # the suite's pin (conftest): off here, to read the flags
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl\n")
    assert not cpu_has_native_bf16(str(info))  # AVX-512 alone: oneDNN would only emulate bf16
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_native_bf16(str(info))
    info.write_text("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert cpu_has_native_bf16(str(info))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))
    monkeypatch.setenv("MIMO_CPU_BF16", "0")  # the override, both ways, whatever the flags say
    assert not cpu_has_native_bf16(str(info))
    monkeypatch.setenv("MIMO_CPU_BF16", "1")
    assert cpu_has_native_bf16(str(tmp_path / "missing"))
    assert resolve_precision("auto", torch.device("cpu")) == torch.bfloat16


def test_fast_path_switches_agree_with_the_plain_path():
    """channels-last and bf16 (the CPU defaults) stay within 1e-2 relative error of plain fp32."""
    img = photo(96, 128)
    torch.manual_seed(3)
    model = MIMOUNet(2, 16)
    plain = Deblurrer(copy.deepcopy(model), device="cpu", precision="fp32", tile=0, channels_last=False)
    assert not plain.channels_last and plain.settings["precision"] == "fp32"
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    ref = plain.run_tensor(x)[0][2]
    for precision, tol in (("fp32", 1e-5), ("bf16", 1e-2)):
        fast = Deblurrer(copy.deepcopy(model), device="cpu", precision=precision, tile=0, channels_last=True)
        got = fast.run_tensor(x)[0][2]
        assert float((got - ref).norm() / ref.norm()) < tol, precision
    # uint8 input scaled on the device equals float input scaled on the host
    assert torch.equal(plain.run_tensor(x)[0][2], plain.run_tensor(x.float() / 255)[0][2])


def test_compile_failure_falls_back_to_eager(monkeypatch):
    compiler_failing_with(monkeypatch, "no working C++ compiler")
    x = torch.from_numpy(photo(32, 48)).permute(2, 0, 1)[None]
    d = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0, compile=True)
    assert d.compiled and d.settings["compile"] is True
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no working C\\+\\+ compiler.*running eager"):
        got = d.run_tensor(x)[0][2]
    assert not d.compiled
    assert torch.equal(got, Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0).run_tensor(x)[0][2])


@pytest.mark.slow
def test_compiled_network_matches_eager():
    """A real torch.compile (inductor, weights frozen) gives what eager gives, batch and all."""
    frames = np.stack([photo(32, 48), photo(32, 48, seed=1)])
    eager = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0).deblur_batch(frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would fail the test
        d = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0, compile=True)
        got = d.deblur_batch(frames)
        again = d.deblur_batch(frames[::-1].copy())
    assert d.compiled
    for a, b in zip(eager, got, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert np.array_equal(again[0][0], got[0][1])


@pytest.mark.gpu
def test_cuda_fast_path_matches_cpu_fp32():
    """CUDA defaults (bf16, channels-last, integer frames through pinned memory), compiled or not."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    frames = np.stack([photo(64, 96), photo(64, 96, seed=1)])
    ref = Deblurrer(tiny_model(), device="cpu", precision="fp32", tile=0).deblur_batch(frames)
    for compile in (False, True):
        d = Deblurrer(tiny_model(), device="cuda", precision="auto", tile=0, compile=compile)
        got = d.deblur_batch(frames)
        assert d.compiled == compile
        for a, b in zip(ref, got, strict=True):
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 3


def test_auto_compile_is_settled_by_the_workload(monkeypatch):
    assert not Deblurrer(tiny_model(), device="cpu", precision="fp32", compile="auto").decide_compile(
        10**6, 720, 1280
    )  # never on CPU
    monkeypatch.setitem(engine.COMPILE_MIN_PIXELS, "cpu", 50 * 1280 * 720)  # as CUDA's rule works
    d = Deblurrer(tiny_model(), device="cpu", precision="fp32", compile="auto")
    assert not d.compiled and d.settings["compile"] == "auto"
    assert not d.decide_compile(20, 720, 1280)  # 20 frames of 720p: compiling would not pay
    assert d.settings["compile"] is False
    d = Deblurrer(tiny_model(), device="cpu", precision="fp32", compile="auto")
    assert d.decide_compile(200, 720, 1280) and d.compiled and d.settings["compile"] is True
    assert not Deblurrer(tiny_model(), device="cpu", precision="fp32", compile="auto").decide_compile(
        None, 720, 1280
    )  # unknown length
    assert not Deblurrer(tiny_model(), device="cpu", precision="fp32", compile=False).decide_compile(10**6, 720, 1280)
    with pytest.raises(ValueError, match="compile must be"):
        Deblurrer(tiny_model(), device="cpu", compile="yes")


def test_reusing_freed_memory_keeps_every_allocation_working():
    import platform
    import threading

    from mimocli.device import freed_memory_reused, reuse_freed_memory

    glibc = platform.libc_ver()[0] == "glibc"
    assert reuse_freed_memory() == glibc
    assert freed_memory_reused() == glibc
    assert reuse_freed_memory() == glibc  # idempotent
    sums = []

    def big() -> None:  # a thread's arena cannot grow past 64 MB: glibc must still mmap this
        sums.append(float(torch.ones(300 * 2**20 // 4).sum()))

    t = threading.Thread(target=big)
    t.start()
    t.join()
    assert sums == [300 * 2**20 // 4]
    for _ in range(3):
        assert float(torch.ones(300 * 2**20 // 4).sum()) == 300 * 2**20 // 4


def test_channels_last_switch_sets_the_layout_the_network_sees():
    seen = []

    def look(x: torch.Tensor) -> None:
        seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())

    frames = np.stack([photo(32, 48)])  # arrives as an NHWC view
    Deblurrer(Probe(look), device="cpu", precision="fp32", tile=0, channels_last=False).deblur_batch(frames)
    Deblurrer(Probe(look), device="cpu", precision="fp32", tile=0, channels_last=True).deblur_batch(frames)
    assert seen == [False, True]
