from __future__ import annotations

import json
import platform
import statistics

import numpy as np
import pytest
import torch

from mimocli.bench import MemoryMeter, percentile, random_model, sample_frames, tflop_per_frame, time_calls
from mimocli.registry import get_variant

from .clips import make_clip, small_weights
from .test_cli import flat, run


def _bench_json(*args: str) -> dict:
    r = run("bench", "--device", "cpu", "--size", "64x48", "--warmup", "1", "--iters", "3", "--json", *args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_bench_json_is_consistent_with_itself():
    """Parse `mimo bench --json` and recompute every derived figure from the raw times."""
    info = _bench_json("--variant", "base")
    assert info["weights"] == "random" and info["machine"]["threads"] >= 1
    base, fast = info["results"]
    assert (base["mode"], fast["mode"]) == ("baseline", "fast")
    assert base["precision"] == "fp32" and not base["channels_last"] and not base["compiled"]
    assert fast["channels_last"]  # the CPU default
    assert fast["reuse_memory"] == (platform.libc_ver()[0] == "glibc")
    work = 1.79 * 64 * 48 / (1280 * 720)  # TFLOP per frame at this size
    for r in (base, fast):
        assert (r["width"], r["height"], r["batch"], r["iters"], r["warmup"]) == (64, 48, 1, 3, 1)
        assert len(r["times_ms"]) == 3 and min(r["times_ms"]) > 0
        assert r["median_ms"] == pytest.approx(statistics.median(r["times_ms"]))
        assert r["p90_ms"] == pytest.approx(float(np.percentile(r["times_ms"], 90)))
        assert r["p90_ms"] >= r["median_ms"]
        assert r["fps"] == pytest.approx(1000 / r["median_ms"])
        assert r["tflops"] == pytest.approx(work / (r["median_ms"] / 1000))
        assert r["peak_memory_mb"] >= 0
    assert base["speedup"] is None
    assert fast["speedup"] == pytest.approx(base["median_ms"] / fast["median_ms"])
    assert 0 <= fast["rel_error"] < 1e-2
    assert fast["psnr_db"] > 40


def test_bench_variants_batches_and_no_baseline():
    info = _bench_json("--variant", "all", "--no-baseline", "--batch", "2", "--precision", "fp32", "--no-compile")
    rows = info["results"]
    names = [(r["variant"], r["mode"]) for r in rows]
    assert names == [("mimo-unet", "fast"), ("mimo-unet-plus", "fast"), ("xydeblur", "fast")]
    assert all(r["batch"] == 2 and r["precision"] == "fp32" and r["speedup"] is None for r in rows)
    # per-frame figures: a batch's time divided by its frames, TFLOP/s counted per frame
    plus, xy = rows[1], rows[2]
    assert plus["tflops"] == pytest.approx(4.24 * 64 * 48 / (1280 * 720) / (plus["median_ms"] / 1000))
    assert xy["tflops"] == pytest.approx(1.93 * 64 * 48 / (1280 * 720) / (xy["median_ms"] / 1000))


def test_bench_table_and_errors(tmp_path):
    r = run("bench", "--device", "cpu", "--variant", "base", "--size", "32x32", "--iters", "1")
    assert r.exit_code == 0, r.output
    text = r.stdout
    for word in ("ms/frame", "p90 ms", "frames/s", "TFLOP/s", "peak MB", "speed-up", "baseline fp32", "1.00x"):
        assert word in text
    assert "random weights" in flat(text)

    r = run("bench", "--size", "720p")
    assert r.exit_code == 2 and "WIDTHxHEIGHT" in flat(r.output)
    r = run("bench", "--variant", "huge")
    assert r.exit_code == 2 and "unknown variant" in flat(r.stderr)
    r = run("bench", "--device", "tpu", "--size", "32x32")
    assert r.exit_code == 1 and "unknown device" in flat(r.stderr)
    r = run("bench", "--image", tmp_path / "missing.png")
    assert r.exit_code == 1 and "missing.png" in flat(r.stderr)


def test_bench_with_weights_and_image(tmp_path):
    weights = small_weights(tmp_path / "w.safetensors", width=16)
    img = np.zeros((10, 12, 3), dtype=np.uint8)
    img[:, 6:] = 200
    from mimocli.images import write_image

    write_image(tmp_path / "p.png", img)
    info = _bench_json("--weights", weights, "--image", tmp_path / "p.png", "--no-baseline")
    assert info["weights"] == str(weights) and len(info["results"]) == 1


def test_bench_video_splits_the_time(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=12, size=(64, 48))
    before = set(tmp_path.iterdir())
    r = run("bench", "--video", src, "--variant", "base", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    v = json.loads(r.stdout)["video"]
    assert v["deblurred"] == v["frames"] == 12 and (v["width"], v["height"]) == (64, 48)
    assert v["decode_seconds"] > 0 and v["infer_seconds"] > 0 and v["encode_seconds"] > 0
    assert v["fps"] == pytest.approx(12 / v["seconds"])
    assert set(tmp_path.iterdir()) == before  # the output went to a temporary folder, now gone

    r = run("bench", "--video", src, "--variant", "base", "--device", "cpu", "--duration", "0.25")
    assert r.exit_code == 0, r.output
    assert "decode s" in r.stdout and "inference" in r.stderr
    r = run("bench", "--video", tmp_path / "none.mp4")
    assert r.exit_code == 1 and "none.mp4" in flat(r.stderr)


def test_timing_helpers():
    calls = []
    warm, times = time_calls(lambda: calls.append(1), torch.device("cpu"), 2, 5)
    assert len(calls) == 7 and len(times) == 5 and warm >= 0
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == pytest.approx(9.1)
    assert percentile([5.0], 90) == 5.0
    assert tflop_per_frame(get_variant("plus"), 640, 360) == pytest.approx(4.24 / 4)
    with MemoryMeter(torch.device("cpu")) as mem:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, every page touched
        del block
    assert mem.peak > 150 * 2**20


def test_sample_frames_and_random_model():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    frames = sample_frames(5, 4, 2, img)
    assert frames.shape == (2, 4, 5, 3) and frames.flags.c_contiguous
    assert np.array_equal(frames[0, 2:4, 3:5], img[:, :2])  # tiled
    assert np.array_equal(sample_frames(8, 8, 1, (img.astype(np.uint16) * 257))[0, :2, :3], img)
    a, b = random_model(1), random_model(1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_reuse_memory_switch_in_a_fresh_process():
    """Process-wide allocator settings can only be seen from a process of their own."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "mimocli", "bench", "--device", "cpu", "--size", "32x32", "--iters", "1", "--json"]
    for flag, expected in (("--no-reuse-memory", False), ("--reuse-memory", platform.libc_ver()[0] == "glibc")):
        done = subprocess.run([*args, flag], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        base, fast = json.loads(done.stdout)["results"]
        assert base["reuse_memory"] is False  # the baseline always runs as the authors' code would
        assert fast["reuse_memory"] is expected


def test_int8_rows_stand_beside_the_float_path_against_the_measured_ceiling(monkeypatch, tmp_path):
    from mimocli import quantize as qz
    from mimocli.ceiling import conv_ceiling

    monkeypatch.setattr(qz, "cache_folder", lambda *_: tmp_path)
    info = _bench_json("--variant", "lite", "--precision", "int8")
    base, fast, int8 = info["results"]
    assert (base["mode"], fast["mode"], int8["mode"]) == ("baseline", "fast", "fast")
    assert fast["precision"] in ("fp32", "bf16") and int8["precision"] == "int8"
    assert int8["ceiling_tflops"] == conv_ceiling("cpu", "int8") > 0  # measured here, once per process
    assert base["ceiling_tflops"] == conv_ceiling("cpu", "fp32") > 0
    assert int8["speedup"] == pytest.approx(base["median_ms"] / int8["median_ms"])
    assert int8["psnr_db"] > 25  # random weights on noise frames
    r = run("bench", "--device", "cpu", "--size", "64x48", "--iters", "1", "--variant", "lite", "-p", "int8")
    assert r.exit_code == 0 and "of peak" in r.stdout and "int8" in r.stdout
