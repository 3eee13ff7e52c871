"""Properties of real-world videos that must survive `mimo video`: aspect ratio, the rate of a raw
stream, colour tags of untagged input, and sound in sync with every cut."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from mimocli.cli import app
from mimocli.images import read_image

from .clips import decode, identity_weights, make_clip, picture, small_weights

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def weights(tmp_path) -> Path:
    return small_weights(tmp_path / "w8.safetensors")


def video_stream(path: Path) -> tuple[Fraction | None, list[int]]:
    """(sample aspect ratio, [matrix, range, primaries, transfer]) as a player reads them."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        ctx = s.codec_context
        sar = s.sample_aspect_ratio or ctx.sample_aspect_ratio
        tags = [int(ctx.colorspace), int(ctx.color_range), int(ctx.color_primaries), int(ctx.color_trc)]
        return (Fraction(sar) if sar else None), tags


def timeline(path: Path, kind: str) -> list[tuple[float, float, bytes]]:
    """(start, end, bytes) in seconds of every packet of the first ``kind`` stream."""
    with av.open(str(path)) as c:
        s = next(s for s in c.streams if s.type == kind)
        tb = s.time_base
        return [(float(p.pts * tb), float((p.pts + p.duration) * tb), bytes(p)) for p in c.demux(s) if p.size]


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_sample_aspect_ratio_is_kept(tmp_path, weights, ext):
    src = make_clip(tmp_path / f"hdv{ext}", frames=6, size=(72, 54), sar=Fraction(4, 3), audio=None)
    assert video_stream(src)[0] == Fraction(4, 3)
    out = tmp_path / f"out{ext}"
    r = run("video", src, out, "-w", weights, "--quiet", "--save-scales")
    assert r.exit_code == 0, r.output
    assert video_stream(out)[0] == Fraction(4, 3)
    assert video_stream(tmp_path / f"out_x0.5{ext}")[0] == Fraction(4, 3)  # both sides halved alike


@pytest.mark.parametrize(
    ("codec", "size", "matrix"),
    [
        ("libx264", (128, 96), 6),  # nothing said by the container nor the frames: by size, as players guess
        ("libx264", (1280, 720), 1),
        ("libvpx", (128, 96), 5),  # VP8 frames are BT.601 (bt470bg) whatever their size, as its decoder says
        ("libvpx", (1280, 720), 5),
    ],
    ids=["h264-sd-bt601", "h264-hd-bt709", "vp8-sd", "vp8-hd-bt601"],
)
def test_untagged_input_gets_the_matrix_the_conversion_used(tmp_path, weights, codec, size, matrix):
    src = make_clip(tmp_path / "untagged.mkv", frames=2, size=size, codec=codec, colour=None, audio=None)
    assert video_stream(src)[1][0] == 2  # the container says nothing
    out = tmp_path / "out.mp4"
    r = run("video", src, out, "-w", weights, "--quiet", "--tile", "0")
    assert r.exit_code == 0, r.output
    assert video_stream(out)[1] == [matrix, 1, 2, 2]  # the matrix and (limited) range used, said


def test_an_untagged_vp8_keeps_its_colours_in_a_player(tmp_path):
    """Recipe: a 1280x720 VP8 WebM with no colour tags. Its frames are BT.601 (VP8's decoder says
    so), but the stream was read and tagged as BT.709 by its size: every player showed the output
    shifted (6.5 levels on average). Decoded by their own tags, as a player does, the input and the
    output of a network that returns its input must agree up to what x264 loses (0.007 here)."""
    src = make_clip(
        tmp_path / "vp8.webm", frames=2, size=(1280, 720), codec="libvpx", colour=None, audio=None, smooth=True
    )
    out = tmp_path / "out.mp4"
    r = run("video", src, out, "-w", identity_weights(tmp_path / "id.safetensors"), "--quiet", "--tile", "0")
    assert r.exit_code == 0, r.output
    _, seen_in, _ = decode(src)  # PyAV converts by the frame's tags, as players do
    _, seen_out, _ = decode(out)
    shift = np.abs(seen_in[0].astype(float) - seen_out[0].astype(float)).mean()
    assert shift < 0.5, shift


def test_tags_the_input_gives_are_kept_as_given(tmp_path, weights):
    src = make_clip(tmp_path / "bt709.mkv", frames=2, colour=(1, 1, 1, 1), audio=None)
    r = run("video", src, tmp_path / "o.mkv", "-w", weights, "--quiet")
    assert r.exit_code == 0 and video_stream(tmp_path / "o.mkv")[1] == [1, 1, 1, 1]
    full = make_clip(tmp_path / "full.mkv", frames=2, colour=(5, 2, 5, 6), pix_fmt="yuvj420p", audio=None)
    r = run("video", full, tmp_path / "f.mkv", "-w", weights, "--quiet", "--pix-fmt", "yuv420p")
    assert r.exit_code == 0 and video_stream(tmp_path / "f.mkv")[1] == [5, 2, 5, 6]


def test_raw_stream_keeps_the_rate_it_carries(tmp_path, weights):
    raw = make_clip(tmp_path / "film.h264", frames=24, fps=24, audio=None, fmt="h264", colour=None)
    raw = tmp_path / "film.h265"
    make_clip(raw, frames=24, fps=24, audio=None, fmt="hevc", codec="libx265", colour=None)
    with av.open(str(raw)) as c:  # what PyAV itself reports: the raw demuxer's default
        assert c.streams.video[0].average_rate == 25
    for name in ("film.h264", "film.h265"):
        src = tmp_path / name
        _rewrite_rate(src, Fraction(24000, 1001))
        out = tmp_path / f"{name}.mp4"
        r = run("video", src, out, "-w", weights, "--quiet", "--json")
        assert r.exit_code == 0, r.output
        pts = timeline(out, "video")
        assert len(pts) == 24
        assert max(end for _, end, _ in pts) == pytest.approx(24 * 1001 / 24000, abs=1e-3)
    out = tmp_path / "forced.mkv"
    r = run("video", tmp_path / "film.h264", out, "-w", weights, "--fps", "30")
    assert r.exit_code == 0, r.output
    assert "--fps 30 overrides the 23.976 fps the stream carries" in r.stderr
    assert max(end for _, end, _ in timeline(out, "video")) == pytest.approx(24 / 30, abs=2e-3)
    r = run(
        "video",
        make_clip(tmp_path / "c.mp4", frames=3, audio=None),
        tmp_path / "c_out.mp4",
        "-w",
        weights,
        "--fps",
        "30",
    )
    assert r.exit_code == 0 and "--fps is ignored" in r.stderr


def _rewrite_rate(path: Path, rate: Fraction) -> None:
    """Re-encode the raw stream at ``path`` so that its headers (VUI timing) carry ``rate``."""
    codec = "libx265" if path.suffix == ".h265" else "libx264"
    with av.open(str(path)) as src:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    fmt = "hevc" if codec == "libx265" else "h264"
    with av.open(str(path), "w", format=fmt) as out:
        v = out.add_stream(codec, rate=rate)
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = "yuv420p"
        if codec == "libx265":
            v.options = {"x265-params": "log-level=none"}
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            out.mux(v.encode(f))
        out.mux(v.encode())


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_start_0_is_no_start_priming_and_all(tmp_path, weights, ext):
    src = make_clip(tmp_path / f"a{ext}", frames=12, audio="aac")
    assert timeline(src, "audio")[0][0] < 0  # the AAC priming packet, before 0
    plain, zero = tmp_path / f"plain{ext}", tmp_path / f"zero{ext}"
    assert run("video", src, plain, "-w", weights, "--quiet").exit_code == 0
    assert run("video", src, zero, "-w", weights, "--quiet", "--start", "0").exit_code == 0
    assert timeline(zero, "audio") == timeline(plain, "audio") == timeline(src, "audio")
    assert [t for t, _, _ in timeline(zero, "video")] == [t for t, _, _ in timeline(plain, "video")]


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_a_cut_keeps_every_stream_in_sync(tmp_path, weights, ext):
    src = make_clip(tmp_path / f"a{ext}", frames=24, audio="aac")
    out = tmp_path / f"cut{ext}"
    r = run("video", src, out, "-w", weights, "--quiet", "--start", "0.3", "--end", "0.7", "--json")
    assert r.exit_code == 0, r.output
    first_frame = 8 / 24  # the first frame at or after 0.3 s
    video_in = [t for t, _, _ in timeline(src, "video") if first_frame - 1e-3 <= t < 0.7]
    video_out = [t for t, _, _ in timeline(out, "video")]
    assert len(video_out) == len(video_in) == 9
    offset = min(video_out) - min(video_in)  # where the muxer put the first frame (Matroska may shift all)
    by_bytes = {data: t for t, _, data in timeline(src, "audio")}
    moved = [t - by_bytes[data] for t, _, data in timeline(out, "audio")]
    assert moved and all(m == pytest.approx(offset, abs=1.5e-3) for m in moved)  # sound moved with the picture
    audio_in = [t for t, end, _ in timeline(src, "audio") if end > first_frame and t < 0.7]
    assert len(moved) == len(audio_in) + 1  # what overlaps the cut, and the packet that primes the decoder
    assert json.loads(r.stdout)["frames"] == 9
    _, rgb, _ = decode(out)
    assert len(rgb) == 9


def transparent_clip(path: Path, frames: int = 4, size: tuple[int, int] = (64, 48)) -> Path:
    """VP9 with alpha in WebM, as browsers and motion-graphics tools write it: the alpha plane
    travels beside the picture (BlockAdditional), which FFmpeg's own VP9 decoder ignores."""
    w, h = size
    with av.open(str(path), "w") as out:
        v = out.add_stream("libvpx-vp9", rate=24)
        v.width, v.height, v.pix_fmt = w, h, "yuva420p"
        for i in range(frames):
            rgba = np.zeros((h, w, 4), np.uint8)
            rgba[..., :3] = picture(i, h, w)
            rgba[..., 3] = np.linspace(0, 255, w, dtype=np.float32)[None, :].astype(np.uint8)
            rgba[: h // 4, :, 3] = 0  # a fully transparent band
            f = av.VideoFrame.from_ndarray(rgba, format="rgba")
            f.pts = i
            out.mux(v.encode(f))
        out.mux(v.encode())
    return path


def alphas(path: Path) -> list[np.ndarray]:
    """The alpha plane of every frame, read as a player that honours it does."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        name = {"vp9": "libvpx-vp9", "vp8": "libvpx"}.get(s.codec_context.name)
        ctx = av.CodecContext.create(name, "r") if name else s.codec_context
        frames = []
        for p in c.demux(s):
            frames += ctx.decode(p if p.size or name is None else None)
        return [f.to_ndarray(format="rgba")[..., 3] for f in frames]


def test_transparency_is_kept_where_the_output_can_hold_it(tmp_path, weights):
    src = transparent_clip(tmp_path / "logo.webm")
    source_alpha = alphas(src)
    assert source_alpha[0].min() == 0 and source_alpha[0].max() > 200
    r = run("video", src, tmp_path / "o.mkv", "-w", weights, "--quiet", "-c", "ffv1", "--save-scales")
    assert r.exit_code == 0, r.output
    assert all(np.array_equal(a, b) for a, b in zip(alphas(tmp_path / "o.mkv"), source_alpha, strict=True))
    half = alphas(tmp_path / "o_x0.5.mkv")
    assert np.array_equal(half[0], source_alpha[0][::2, ::2])
    r = run("video", src, tmp_path / "o.webm", "-w", weights, "--quiet")
    assert r.exit_code == 0, r.output
    with av.open(str(tmp_path / "o.webm")) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
    got = alphas(tmp_path / "o.webm")
    assert len(got) == 4 and all(np.abs(a.astype(int) - b).max() <= 8 for a, b in zip(got, source_alpha, strict=True))
    r = run("video", src, tmp_path / "frames", "-w", weights, "--quiet", "--frames")
    assert r.exit_code == 0, r.output
    png = read_image(tmp_path / "frames" / "frame_000001.png").pixels
    assert png.shape == (48, 64, 4) and np.array_equal(png[..., 3], source_alpha[0])


def test_transparency_is_never_dropped_in_silence(tmp_path, weights):
    src = transparent_clip(tmp_path / "logo.webm", frames=2)
    r = run("video", src, tmp_path / "o.mp4", "-w", weights, "--quiet")
    assert r.exit_code == 1 and not (tmp_path / "o.mp4").exists()
    line = " ".join(r.stderr.split())
    assert "logo.webm is transparent (an alpha channel), which libx264 cannot hold" in line and ".webm" in line
    r = run("video", src, tmp_path / "o.mp4", "-w", weights, "--pix-fmt", "yuv420p")
    assert r.exit_code == 0 and "the alpha channel (transparency) is dropped" in r.stderr


def test_the_mp4_brand_is_kept(tmp_path, weights):
    src = make_clip(tmp_path / "phone.mp4", frames=3, audio=None, brand="mp42")
    r = run("video", src, tmp_path / "o.mp4", "-w", weights, "--quiet")
    assert r.exit_code == 0, r.output
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert c.metadata["major_brand"] == "mp42"


def test_encoders_print_no_banners(tmp_path, weights):
    """x265 and SVT-AV1 print their banners to stderr, once per segment: a long run would scroll
    hundreds of lines past the one that matters."""
    import subprocess
    import sys

    src = make_clip(tmp_path / "c.mp4", frames=6, audio=None)
    for codec in ("hevc", "av1"):  # three segments: libx265 gave garbage decode times from its third encoder on
        out = tmp_path / f"o_{codec}.mp4"
        done = subprocess.run(
            [sys.executable, "-m", "mimocli", "video", src, out, "-w", weights, "-c", codec, "--checkpoint", "2"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines() == [done.stderr.splitlines()[-1]], done.stderr  # the summary alone
        assert done.stderr.startswith("Deblurred 6 of 6 frame(s)")
        assert len(decode(out)[0]) == 6
