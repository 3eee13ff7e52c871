"""The same `mimo deblur`, `mimo video` and `mimo eval` on a real local Ray cluster (2 CPUs)."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from mimocli.images import write_image  # noqa: E402
from mimocli.settings import ClusterSettings, RunSettings  # noqa: E402
from mimocli.video import VideoOptions, WorkDir, deblur_video  # noqa: E402

from .clips import make_clip  # noqa: E402
from .conftest import digest, photo  # noqa: E402
from .test_cli import run  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """One private cluster for the module: each test's run joins it (--ray local reuses it)."""
    from mimocli.cluster import connect

    resources = connect(ClusterSettings("local"))
    yield resources
    ray.shutdown()


def _photos(folder: Path, n: int = 6) -> Path:
    folder.mkdir()
    for i in range(n):
        write_image(folder / f"p{i}.png", photo(48, 64, seed=i))
    write_image(folder / "gray_alpha.png", np.dstack([photo(40, 40)[:, :, 0], np.full((40, 40), 99, np.uint8)]))
    write_image(folder / "deep.png", (photo(40, 56).astype(np.uint16) * 257))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    return folder


def _records(stdout: str) -> dict[str, str]:
    return {Path(r["input"]).name: r["status"] for r in map(json.loads, stdout.splitlines())}


def _files(folder: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in sorted(folder.iterdir())}


def test_photos_on_the_cluster_are_the_local_run(cluster, tmp_path, tiny_weights):
    pics = _photos(tmp_path / "pics")
    # One thread each, as a replica has: oneDNN's sums, and so the last bit of a 16-bit output,
    # depend on how many threads share a convolution.
    common = ("-w", tiny_weights, "--device", "cpu", "--threads", "1", "--save-scales", "--json")
    local = run("deblur", pics, "-o", tmp_path / "local", *common)
    remote = run("deblur", pics, "-o", tmp_path / "ray", *common, "--ray", "local", "--ray-replicas", "2")
    assert local.exit_code == remote.exit_code == 1  # the broken file, in both
    assert "broken.png" in remote.stderr and "mimo-worker" not in remote.stderr  # its own path, not the worker's
    assert _records(local.stdout) == _records(remote.stdout)
    assert _records(remote.stdout)["broken.png"] == "failed"
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")  # byte for byte, scales and all
    assert not any(p.name.endswith(".part") for p in (tmp_path / "ray").iterdir())


def test_xydeblur_on_the_cluster_is_the_local_run(cluster, tmp_path):
    """The second network: recognised from its weights on every replica; its residuals written too."""
    from safetensors.torch import save_file

    from .test_xydeblur import tiny_xy

    weights = tmp_path / "xy.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_xy().state_dict().items()}, weights)
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(3):
        write_image(pics / f"p{i}.png", photo(48, 64, seed=i))
    common = ("-w", weights, "--device", "cpu", "--threads", "1", "--save-scales", "-q")
    assert run("deblur", pics, "-o", tmp_path / "local", *common).exit_code == 0
    remote = run("deblur", pics, "-o", tmp_path / "ray", *common, "--ray", "local")
    assert remote.exit_code == 0, remote.output
    files = _files(tmp_path / "ray")
    assert len(files) == 9 and "p0_deblurred_residual-x.png" in files
    assert files == _files(tmp_path / "local")


def test_skip_existing_after_a_partial_run_does_only_what_is_missing(cluster, tmp_path, tiny_weights):
    pics = _photos(tmp_path / "pics", n=4)
    (pics / "broken.png").unlink()
    out = tmp_path / "out"
    common = ("-w", tiny_weights, "--device", "cpu", "--json", "--ray", "local")
    first = run("deblur", pics / "p0.png", pics / "p1.png", "-o", out, *common)
    assert first.exit_code == 0, first.output
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run("deblur", pics, "-o", out, "--skip-existing", *common)
    assert again.exit_code == 0, again.output
    status = _records(again.stdout)
    assert status["p0.png"] == status["p1.png"] == "skipped"
    assert {status[n] for n in ("p2.png", "p3.png", "gray_alpha.png", "deep.png")} == {"ok"}
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in kept.items())  # not written again
    refused = run("deblur", pics, "-o", out, *common)
    assert refused.exit_code == 1 and "already exists" in refused.stderr


def test_a_killed_worker_is_retried_and_changes_nothing(cluster, tmp_path, tiny_weights):
    from mimocli.cluster import Cluster
    from mimocli.paths import plan_jobs
    from mimocli.photos import PhotoOptions
    from mimocli.weights import load_weights

    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(10):
        write_image(pics / f"p{i}.png", photo(96, 128, seed=i))
    local = run("deblur", pics, "-o", tmp_path / "local", "-w", tiny_weights, "--device", "cpu", "--threads", "1", "-q")
    assert local.exit_code == 0, local.output

    loaded = load_weights(None, "cpu", tiny_weights)
    c = Cluster(ClusterSettings("local", replicas=2), loaded, RunSettings(device="cpu", threads=1))
    pids = [pid for _actor, pid in ray.get([a.identity.remote() for a in c.actors])]
    results = []
    try:
        for job, outcome in c.photos(plan_jobs([str(pics)], str(tmp_path / "ray")), PhotoOptions(), "tiny"):
            results.append((job, outcome))
            if len(results) == 1:
                os.kill(pids[1], signal.SIGKILL)  # a worker dies with a job in hand
    finally:
        c.close()
    assert len(results) == 10 and all(o.status == "ok" for _j, o in results)
    assert c.retries >= 1
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")


def test_video_on_the_cluster_is_the_local_video_byte_for_byte(cluster, tmp_path, tiny_weights, monkeypatch):
    """Segments 1-3 seek to the keyframe before them (every third frame, so they decode one or
    two frames first), and the video travels in several pieces."""
    import mimocli.cluster
    from mimocli.video.source import VideoSource

    src = make_clip(tmp_path / "in.mp4", frames=14, size=(64, 48), audio="aac", gop=3)
    index = VideoSource(src).seek_index()
    assert index is not None
    keyframe = {dts: pts for pts, dts in index.keys}
    assert [index.at(k).pts - keyframe[index.at(k).key] for k in (4, 8)] == [512, 1024]  # 1 and 2 frames
    monkeypatch.setattr(mimocli.cluster, "PIECE", src.stat().st_size // 3)
    common = ("-w", tiny_weights, "--device", "cpu", "--threads", "1", "-c", "ffv1", "--checkpoint", "4", "--json")
    local = run("video", src, tmp_path / "local.mkv", *common)
    assert local.exit_code == 0, local.output
    remote = run("video", src, tmp_path / "ray.mkv", *common, "--ray", "local", "--ray-replicas", "2")
    assert remote.exit_code == 0, remote.output
    info = json.loads(remote.stdout)
    assert (info["frames"], info["deblurred"], info["streams_copied"]) == (14, 14, 1)
    assert digest(tmp_path / "local.mkv") == digest(tmp_path / "ray.mkv")
    assert not WorkDir(tmp_path / "ray.mkv").path.exists()


def test_a_local_run_interrupted_is_finished_by_the_cluster(cluster, tmp_path, tiny_weights):
    from mimocli.engine import Deblurrer
    from mimocli.weights import load_weights

    src = make_clip(tmp_path / "in.mp4", frames=14, size=(64, 48), audio="aac", gop=3)  # segments seek
    common = ("-w", tiny_weights, "--device", "cpu", "--threads", "1", "-c", "ffv1", "--checkpoint", "4")
    assert run("video", src, tmp_path / "whole.mkv", *common, "-q").exit_code == 0

    def stop(done: int, total: int | None) -> None:
        if done >= 8:
            raise KeyboardInterrupt

    torch.set_num_threads(1)  # as the cluster's one-CPU replicas run
    d = Deblurrer(load_weights(None, "cpu", tiny_weights).model, RunSettings(device="cpu", threads=1))
    dst = tmp_path / "out.mkv"
    with pytest.raises(KeyboardInterrupt):
        deblur_video(src, dst, d, VideoOptions(codec="ffv1", checkpoint=4), stop)
    assert WorkDir(dst).done() == 2 and not dst.exists()
    r = run("video", src, dst, *common, "--resume", "--json", "--ray", "local")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert (info["resumed"], info["deblurred"]) == (8, 6)
    assert digest(dst) == digest(tmp_path / "whole.mkv")


def test_a_rotated_cut_on_the_cluster_is_the_local_cut(cluster, tmp_path, tiny_weights):
    """The Ray driver never decodes: the rotation and the cut's start come from the plan's probe,
    not from a decoder's leftovers, so its file is the local one, rotated and cut alike."""
    from .clips import decode

    src = make_clip(tmp_path / "in.mp4", frames=24, size=(64, 48), audio="aac", gop=3, rotate=90)
    common = ("-w", tiny_weights, "--device", "cpu", "--threads", "1", "-c", "ffv1", "--checkpoint", "4")
    cut = ("--start", "0.25", "--end", "0.75", "--json")
    local = run("video", src, tmp_path / "local.mkv", *common, *cut)
    assert local.exit_code == 0, local.output
    remote = run("video", src, tmp_path / "ray.mkv", *common, *cut, "--ray", "local", "--ray-replicas", "2")
    assert remote.exit_code == 0, remote.output
    assert digest(tmp_path / "local.mkv") == digest(tmp_path / "ray.mkv")
    info = json.loads(remote.stdout)
    assert info["frames"] == 12 and info["settings"]["precision"] == "fp32" and info["tile"] == 0
    pts, _rgb, first = decode(tmp_path / "ray.mkv")
    assert len(pts) == 12 and first.rotation == 90
    with av.open(str(tmp_path / "ray.mkv")) as c:
        audio = c.streams.audio[0]
        times = [float(p.pts * audio.time_base) for p in c.demux(audio) if p.size]
    # The cut's half second, from 0 (not the input's 1 s, nor 0.25 s on): audio packets of 21 ms,
    # one before the cut kept to prime the decoder, as a local cut keeps it.
    assert min(times) == 0 and 0.48 <= max(times) <= 0.56


def _interrupted(src: Path, dst: Path, weights: Path, at: int) -> None:
    """A local run of ``src`` into ``dst`` with --precision auto, stopped after ``at`` frames."""
    from mimocli.engine import build_deblurrer
    from mimocli.weights import load_weights

    def stop(done: int, total: int | None) -> None:
        if done >= at:  # deblurred; the encoder thread commits their segments a moment later
            deadline = time.monotonic() + 60
            while WorkDir(dst).done() < at // 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            raise KeyboardInterrupt

    torch.set_num_threads(1)  # as --threads 1 and the one-CPU replicas run
    d = build_deblurrer(load_weights(None, "cpu", weights).model, RunSettings(device="cpu", threads=1))
    with pytest.raises(KeyboardInterrupt):
        deblur_video(src, dst, d, VideoOptions(codec="ffv1", checkpoint=4), stop)
    assert WorkDir(dst).done() == 2 and not dst.exists()


def _flip(measurements: Path) -> None:
    """Turn every cached measurement around: a run that measured again would now choose otherwise."""
    known = json.loads(measurements.read_text())
    for times in known.values():
        a, b = sorted(times)  # (bf16, fp32) or (float, int8)
        times[a], times[b] = times[b], times[a]
    measurements.write_text(json.dumps(known))


@pytest.mark.parametrize(
    ("bf16", "int8", "chosen"),
    [("0", False, "fp32"), ("1", False, "bf16"), ("1", True, "int8"), ("0", False, "fp32 openvino")],
)
def test_auto_is_decided_once_local_resumed_and_on_the_cluster_alike(
    cluster, tmp_path, tiny_weights, monkeypatch, bf16, int8, chosen
):
    """On a CPU faked without and with native bf16 (and with int8 allowed to auto), the whole
    run, a resumed one and one on Ray give one file; the resumed runs take the precision the
    interrupted run recorded although the measurement now says otherwise. The workers have caches
    of their own, as on another machine: the int8 model they run is the one calibrated here. With
    OpenVINO let through, its backend is chosen, recorded and kept the same way."""
    from mimocli import calibrate
    from mimocli.cluster import connect
    from mimocli.weights import load_weights

    chosen, backend = (*chosen.split(), "torch")[:2]
    ray.shutdown()  # a cluster of its own, whose workers see the faked CPU and caches of their own
    monkeypatch.setenv("MIMO_CPU_BF16", bf16)
    monkeypatch.setenv("MIMO_OPENVINO", "1" if backend == "openvino" else "0")
    monkeypatch.setenv("HOME", pwd.getpwuid(os.getuid()).pw_dir)  # Ray's token, as at the module's start
    here = os.environ["HF_HOME"]
    monkeypatch.setenv("HF_HOME", str(tmp_path / "worker"))
    common = ("-w", tiny_weights, "--device", "cpu", "--threads", "1", "-c", "ffv1", "--checkpoint", "4", "--json")
    try:
        connect(ClusterSettings("local"))
        monkeypatch.setenv("HF_HOME", here)
        if int8:
            assert run("quantize", "-w", tiny_weights, "--auto", "-q").exit_code == 0
        # The measurements, as a run on this machine would find them: bf16 faster, int8 faster still.
        torch.set_num_threads(1)
        model = load_weights(None, "cpu", tiny_weights).model
        key = calibrate.key(model, True)
        against = "bf16" if bf16 == "1" else "fp32"
        known = {key: {"fp32": 1.0, "bf16": 0.5}, f"{key}, int8 against {against}": {"float": 1.0, "int8": 0.3}}
        if backend == "openvino":
            from mimocli.openvino_backend import version

            known[f"{key}, OpenVINO {version()}"] = {"fp32": 0.5, "bf16": 2.0}
        theirs = tmp_path / "worker" / "assets" / "mimocli" / "default" / "precision.json"
        measurements = [calibrate.cache_file(), theirs]
        for path in measurements:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(known))

        src = make_clip(tmp_path / "in.mp4", frames=14, size=(64, 48), audio="aac", gop=3)
        whole = run("video", src, tmp_path / "whole.mkv", *common)
        assert whole.exit_code == 0, whole.output
        ran = json.loads(whole.stdout)["settings"]
        assert (ran["precision"], ran["backend"]) == (chosen, backend)
        remote = run("video", src, tmp_path / "ray.mkv", *common, "--ray", "local", "--ray-replicas", "2")
        assert remote.exit_code == 0, remote.output
        ran = json.loads(remote.stdout)["settings"]
        assert (ran["precision"], ran["backend"]) == (chosen, backend)
        assert digest(tmp_path / "ray.mkv") == digest(tmp_path / "whole.mkv")

        for where in ((), ("--ray", "local")):
            dst = tmp_path / f"resumed{len(where)}.mkv"
            _interrupted(src, dst, tiny_weights, 8)
            for path in measurements:
                _flip(path)
            resumed = run("video", src, dst, *common, "--resume", *where)
            for path in measurements:
                _flip(path)
            assert resumed.exit_code == 0, resumed.output
            info = json.loads(resumed.stdout)
            ran = info["settings"]
            assert (info["resumed"], info["deblurred"], ran["precision"], ran["backend"]) == (8, 6, chosen, backend)
            assert digest(dst) == digest(tmp_path / "whole.mkv")
    finally:
        ray.shutdown()
        monkeypatch.setenv("MIMO_CPU_BF16", "0")
        monkeypatch.setenv("MIMO_OPENVINO", "0")
        connect(ClusterSettings("local"))  # the module's cluster again, for the tests after this one


def test_eval_on_the_cluster_scores_as_the_local_run(cluster, tmp_path, tiny_weights):
    root = tmp_path / "pairs"
    for i in range(3):
        for kind in ("blur", "sharp"):
            (root / f"seq{i}" / kind).mkdir(parents=True, exist_ok=True)
            write_image(root / f"seq{i}" / kind / "000001.png", photo(48, 64, seed=i + (kind == "sharp")))
    common = ("-w", tiny_weights, "--device", "cpu", "--threads", "1", "--json")
    local = json.loads(run("eval", root, *common).stdout)
    remote = json.loads(run("eval", root, *common, "--ray", "local").stdout)
    for a, b in zip(local["images"], remote["images"], strict=True):
        assert (a["name"], a["psnr"], a["ssim"]) == (b["name"], b["psnr"], b["ssim"])


def test_without_ray_nothing_imports_it(tmp_path, tiny_weights):
    code = (
        "import sys, mimocli.cli.deblur, mimocli.cli.video, mimocli.photos, mimocli.video;print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def _mimo(*args: object, code: str = "") -> subprocess.CompletedProcess[str]:
    """`mimo` in a fresh process (a cluster joined in this one would be reused)."""
    script = f"import sys; {code}\nfrom mimocli.cli import main; sys.argv = ['mimo', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_a_cluster_that_cannot_be_had_is_one_line_at_once(tmp_path, tiny_weights):
    write_image(tmp_path / "a.png", photo(32, 32))
    common = (tmp_path / "a.png", "-o", tmp_path / "out", "-w", tiny_weights)
    done = _mimo("deblur", *common, "--ray", "127.0.0.1:9")  # nothing listens there: no minutes of retries
    assert done.returncode == 1 and "cannot join the Ray cluster at 127.0.0.1:9" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = _mimo("deblur", *common, "--ray", "local", code="sys.modules['ray'] = None")  # Ray not installed
    assert done.returncode == 1 and 'pip install "mimocli[ray]"' in done.stderr
    assert not (tmp_path / "out").exists()


def test_joining_leaves_the_process_as_it_was(cluster):
    import builtins

    from mimocli.cluster import connect

    assert builtins.print.__module__ == "builtins"  # Ray would have put its own print in its place
    assert connect(ClusterSettings("local"))["CPU"] >= 1
