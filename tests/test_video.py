from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from mimocli.arch import MIMOUNet
from mimocli.cli import app
from mimocli.cli.video import parse_fps, parse_time
from mimocli.engine import Deblurrer
from mimocli.errors import OutputError, VideoError
from mimocli.images import read_image, write_image
from mimocli.video import VideoOptions, WorkDir, choose_pix_fmt, deblur_video
from mimocli.video.source import VideoSource

from .clips import corrupt_packet, decode, identity_weights, make_clip, packets, picture, planes, small_weights
from .conftest import digest, interrupt_when

runner = CliRunner()


def _default_sigint() -> None:
    """A child of a shell's background job starts with SIGINT ignored; give it back Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


@pytest.fixture
def weights(tmp_path) -> Path:
    return small_weights(tmp_path / "w8.safetensors")


@pytest.fixture
def identity(tmp_path) -> Path:
    return identity_weights(tmp_path / "identity.safetensors")


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def stream_seconds(path: Path, kind: str = "video") -> float:
    with av.open(str(path)) as c:
        s = next(s for s in c.streams if s.type == kind)
        ps = [p for p in c.demux(s) if p.size]
        end = max(p.pts + (p.duration or 0) for p in ps)
        start = min(p.pts for p in ps)
        return float((end - start) * s.time_base)


def planes_format(path: Path) -> str:
    with av.open(str(path)) as c:
        return str(c.streams.video[0].codec_context.format.name)


# -- what is kept ------------------------------------------------------------------------------
def test_mkv_keeps_frames_timing_audio_subtitles_metadata_rotation(tmp_path, weights):
    src = make_clip(tmp_path / "in.mkv", frames=30, subtitles=True, vfr=True, rotate=90, title="Holiday")
    dst = tmp_path / "out.mkv"
    r = run("video", src, dst, "-w", weights, "--json", "--quiet")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["frames"] == 30 and summary["streams_copied"] == 2
    ran = summary["settings"]  # how the network ran, every auto resolved
    assert (ran["device"], ran["precision"], ran["tile"], ran["batch"]) == ("cpu", "fp32", summary["tile"], 1)

    in_pts, _, in_first = decode(src)
    out_pts, out_rgb, out_first = decode(dst)
    assert out_pts == in_pts  # every frame, each at its own (variable) time
    steps = np.diff(in_pts)
    assert steps.max() > 1.9 * steps.min()  # the clip really is variable frame rate
    assert out_first.rotation == in_first.rotation == 90
    assert packets(dst, "audio") == packets(src, "audio")  # copied, not re-encoded
    assert packets(dst, "subtitle") == packets(src, "subtitle")
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        assert b.metadata["title"] == "Holiday"
        assert [s.language for s in b.streams] == [s.language for s in a.streams] == ["eng", "fra", "deu"]
        assert [s.type for s in b.streams] == ["video", "audio", "subtitle"]
    frame = 1 / 24
    assert abs(stream_seconds(dst) - stream_seconds(src)) <= frame
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary or work folder left


def test_mp4_default_h264_aac_copied_and_duration_kept(tmp_path, weights):
    src = make_clip(tmp_path / "in.mp4", frames=24)
    dst = tmp_path / "out.mp4"
    r = run("video", src, dst, "-w", weights, "--quiet")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(dst)
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
    assert decode(dst)[0] == decode(src)[0]
    assert packets(dst, "audio") == packets(src, "audio")
    assert abs(stream_seconds(dst) - stream_seconds(src)) <= 1 / 24
    assert abs(stream_seconds(dst, "audio") - stream_seconds(src, "audio")) < 1e-9


def test_mkv_attachment_is_kept(tmp_path, weights):
    """Fonts attached to an MKV (for its subtitles) come through byte for byte."""
    base = make_clip(tmp_path / "base.mkv", frames=3, audio=None)
    src = tmp_path / "fonts.mkv"
    with av.open(str(base)) as c, av.open(str(src), "w") as out:
        v = out.add_stream_from_template(c.streams.video[0], opaque=True)
        out.add_attachment("font.ttf", "application/x-truetype-font", b"\x00\x01font data")
        for p in c.demux(c.streams.video[0]):
            if p.size:
                p.stream = v
                out.mux(p)
    r = run("video", src, tmp_path / "out.mkv", "-w", weights, "--quiet")
    assert r.exit_code == 0, r.output
    with av.open(str(tmp_path / "out.mkv")) as c:
        (att,) = [s for s in c.streams if s.type == "attachment"]
        assert (att.name, att.mimetype, bytes(att.data)) == (
            "font.ttf",
            "application/x-truetype-font",
            b"\x00\x01font data",
        )


@pytest.mark.parametrize(
    ("colour", "size", "pix_fmt"),
    [
        ((1, 1, 1, 1), (64, 48), "yuv420p"),
        ((6, 2, 6, 6), (64, 48), "yuv420p"),
        ((1, 1, 1, 1), (1280, 720), "yuv420p"),
        ((9, 1, 9, 14), (64, 48), "yuv420p10le"),
    ],
    ids=["bt709-limited", "bt601-full", "bt709-hd", "bt2020-10bit"],
)
def test_colours_survive_the_round_trip(tmp_path, identity, colour, size, pix_fmt):
    """With a network that returns its input, what comes out is what went in: the same matrix
    and range both ways, the same depth, and the same tags on the output. (A wrong matrix moves
    the chroma planes by several levels, a wrong range scales the luma plane.)"""
    src = make_clip(tmp_path / "in.mkv", frames=2, size=size, colour=colour, audio=None, pix_fmt=pix_fmt, smooth=True)
    dst = tmp_path / "out.mkv"
    r = run("video", src, dst, "-w", identity, "--quiet", "--crf", "0", "--tile", "0")
    assert r.exit_code == 0, r.output
    one = 4 if "10" in pix_fmt else 1  # a level of 8-bit video
    for a, b in zip(planes(src), planes(dst), strict=True):
        assert a[0].dtype == b[0].dtype and a[0].shape == b[0].shape
        y, u, v = (x.astype(np.int64) - z for x, z in zip(a, b, strict=True))
        assert np.abs(y).max() <= one
        for c in (u, v):
            # swscale rounds chroma about half a level low in full range and 10-bit: invisible,
            # where a wrong matrix or range is off by 5 to 20 levels
            assert np.abs(c).max() <= 2 * one and abs(c.mean()) < one
    with av.open(str(dst)) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc) == colour
        assert ctx.format.name == planes_format(src)  # yuvj420p for full range


def test_pixel_format_fallback_and_choice():
    assert choose_pix_fmt("libx264", "yuv420p10le", None, True) == ("yuv420p10le", None)
    fmt, note = choose_pix_fmt("libvpx-vp9", "yuv420p10le", None, True)
    assert fmt == "yuv420p" and note and "fewer bits" in note
    assert choose_pix_fmt("libx264", "yuvj420p", None, False)[0] == "yuvj420p"
    assert choose_pix_fmt("libx264", "rgb24", None, False)[0] == "yuv444p"
    with pytest.raises(VideoError, match="cannot encode gbrp"):
        choose_pix_fmt("libx264", "yuv420p", "gbrp", False)


def test_webm_is_vp9_and_its_limits_are_explained(tmp_path, weights):
    silent = make_clip(tmp_path / "silent.mp4", frames=6, audio=None)
    r = run("video", silent, tmp_path / "out.webm", "-w", weights, "--quiet", "--preset", "8")
    assert r.exit_code == 0, r.output
    with av.open(str(tmp_path / "out.webm")) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
        assert c.streams.video[0].frames in (0, 6)
    assert len(decode(tmp_path / "out.webm")[0]) == 6
    # AAC cannot go into WebM: say so, suggest .mkv, write nothing.
    with_aac = make_clip(tmp_path / "aac.mp4", frames=6)
    r = run("video", with_aac, tmp_path / "aac.webm", "-w", weights, "--quiet")
    assert r.exit_code == 1
    assert "audio stream #1 (aac) cannot be stored in webm" in flat(r.stderr) and ".mkv" in r.stderr
    assert not (tmp_path / "aac.webm").exists()


def test_encoder_options(tmp_path, weights):
    src = make_clip(tmp_path / "in.mp4", frames=4, audio=None)
    r = run("video", src, tmp_path / "o.mkv", "-w", weights, "--quiet", "-c", "hevc", "--crf", "30", "--preset", "fast")
    assert r.exit_code == 0, r.output
    with av.open(str(tmp_path / "o.mkv")) as c:
        assert c.streams.video[0].codec_context.name == "hevc"
    r = run("video", src, tmp_path / "p.mov", "-w", weights, "--quiet", "-c", "ffv1", "--crf", "10")
    assert r.exit_code == 1 and "--crf does not apply to ffv1" in r.stderr
    r = run("video", src, tmp_path / "p.mkv", "-w", weights, "--quiet", "-c", "nosuchcodec")
    assert r.exit_code == 1 and "unknown video encoder" in r.stderr
    r = run("video", src, tmp_path / "p.mkv", "-w", weights, "--quiet", "--preset", "warp9")
    assert r.exit_code == 1 and "libx264 encoder refused" in r.stderr
    r = run("video", src, tmp_path / "q.mkv", "-w", weights, "--quiet", "-c", "ffv1", "--pix-fmt", "yuv444p")
    assert r.exit_code == 0, r.output
    _, _, first = decode(tmp_path / "q.mkv")
    assert first.format.name == "yuv444p"
    # the encoder's own threads (the default on a GPU): a whole, decodable video
    src = make_clip(tmp_path / "in12.mp4", frames=12, audio=None)
    r = run("video", src, tmp_path / "t.mp4", "-w", weights, "--quiet", "--encoder-threads", "0", "--checkpoint", "5")
    assert r.exit_code == 0, r.output
    pts, frames, _ = decode(tmp_path / "t.mp4")
    assert len(pts) == 12 and pts == sorted(pts)


# -- segments, scales, folders -------------------------------------------------------------------
def test_start_end_cut_every_stream(tmp_path, weights):
    src = make_clip(tmp_path / "in.mkv", frames=48, subtitles=True)
    dst = tmp_path / "cut.mkv"
    r = run("video", src, dst, "-w", weights, "--quiet", "--start", "0.5", "--end", "0:01.5", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["frames"] == 24
    pts, _, _ = decode(dst)
    # Matroska cannot store the audio that starts before the cut (and primes the decoder) at a
    # negative time: the muxer moves every stream alike, by less than one audio packet.
    assert len(pts) == 24 and 0 <= pts[0] <= 2 * 21
    assert abs(stream_seconds(dst, "audio") - 1.0) < 0.05  # cut at audio packet boundaries (21 ms)
    subs = packets(dst, "subtitle")
    assert [text for _, text in subs] == [b"World"]  # 0.5-0.9 s, now at the first frame
    assert subs[0][0] == pts[0]


def test_save_scales_writes_two_more_videos(tmp_path, weights):
    src = make_clip(tmp_path / "in.mp4", frames=5, size=(72, 44))
    r = run("video", src, tmp_path / "o.mp4", "-w", weights, "--quiet", "--save-scales", "--json")
    assert r.exit_code == 0, r.output
    scales = json.loads(r.stdout)["scales"]
    half, quarter = Path(scales["x0.5"]), Path(scales["x0.25"])
    assert half.name == "o_x0.5.mp4" and quarter.name == "o_x0.25.mp4"
    _, h, _ = decode(half)
    _, q, _ = decode(quarter)
    assert len(h) == len(q) == 5
    assert h[0].shape == (22, 36, 3)
    assert q[0].shape == (10, 18, 3)  # 11x18 has an odd height: the last row is dropped for 4:2:0


def test_frame_folder_in_video_out_and_frames_out(tmp_path, weights):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(1, 12):
        write_image(frames / f"f{i}.png", picture(i, 40, 56))  # f10 sorts after f9
    r = run("video", frames, tmp_path / "seq.mp4", "-w", weights, "--quiet", "--fps", "12")
    assert r.exit_code == 0, r.output
    pts, rgb, first = decode(tmp_path / "seq.mp4")
    assert len(pts) == 11
    with av.open(str(tmp_path / "seq.mp4")) as c:
        s = c.streams.video[0]
        assert float(s.average_rate) == pytest.approx(12)
        assert s.codec_context.colorspace == 1
    r = run("video", tmp_path / "seq.mp4", tmp_path / "out", "--frames", "-w", weights, "--quiet")
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [f"frame_{i:06d}.png" for i in range(1, 12)]
    assert read_image(tmp_path / "out" / "frame_000001.png").pixels.shape == (40, 56, 3)
    r = run("video", frames, tmp_path / "same", "--frames", "-w", weights, "--quiet")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == sorted(p.name for p in frames.iterdir())
    # frames out again: refuse to mix with frames already there, unless resuming
    r = run("video", tmp_path / "seq.mp4", tmp_path / "out", "--frames", "-w", weights, "--quiet")
    assert r.exit_code == 1 and "already holds frames" in r.stderr
    (tmp_path / "out" / "frame_000011.png").unlink()
    r = run("video", tmp_path / "seq.mp4", tmp_path / "out", "--frames", "-w", weights, "--resume", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert (info["resumed"], info["deblurred"]) == (10, 1)
    assert (tmp_path / "out" / "frame_000011.png").exists()


def test_batches_give_the_frames_one_at_a_time_gives():
    torch_model = MIMOUNet(1, 8).eval()
    frames = np.stack([picture(i, 36, 52) for i in range(3)])
    d = Deblurrer(torch_model, device="cpu", precision="fp32", tile=0)
    quarter, half, full = d.deblur_batch(frames)
    assert full.shape == (3, 36, 52, 3) and half.shape == (3, 18, 26, 3) and quarter.shape == (3, 9, 13, 3)
    for i in range(3):
        single = d(frames[i])
        assert np.abs(single.image.astype(int) - full[i]).max() <= 1
        assert np.abs(single.scales[0.25].astype(int) - quarter[i]).max() <= 1


def test_library_api_batches_and_progress(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=7, audio=None)
    seen: list[tuple[int, int | None]] = []
    d = Deblurrer(MIMOUNet(1, 8), device="cpu", precision="fp32", batch=3)
    s = deblur_video(src, tmp_path / "o.mp4", d, VideoOptions(checkpoint=4), lambda a, b: seen.append((a, b)))
    assert (s.frames, s.deblurred, s.resumed) == (7, 7, 0)
    assert seen[0] == (0, 7) and seen[-1] == (7, 7)
    assert [a for a, _ in seen] == [0, 3, 4, 7]  # batches stop at the checkpoint after frame 4
    assert s.fps > 0 and s.infer_seconds > 0 and s.decode_seconds > 0 and s.encode_seconds > 0
    assert len(decode(tmp_path / "o.mp4")[0]) == 7


# -- seeking: a segment or a resumed run starts at the keyframe before it ---------------------------
def _decoded(source, skip=0, seek=None):
    return [(f.index, f.pts, f.duration, f.pixels) for f in source.decode(skip, seek)]


@pytest.mark.parametrize(
    ("name", "codec", "start", "end"),
    [
        ("x264.mp4", "libx264", None, None),  # B-frames: decode order is not presentation order
        ("x264.mkv", "libx264", None, None),
        ("vp9.webm", "libvpx-vp9", None, None),  # hidden alt-ref frames, in superframes
        ("ffv1.mkv", "ffv1", None, None),  # every frame a keyframe
        ("cut.mp4", "libx264", 0.4, 1.3),  # --start/--end: the index counts from the cut
    ],
)
def test_every_seek_gives_the_frames_decoding_from_the_start_gives(tmp_path, name, codec, start, end):
    audio = "libopus" if name.endswith(".webm") else "aac"
    src = make_clip(tmp_path / name, frames=36, size=(48, 32), codec=codec, gop=7, audio=audio, vfr=True)
    source = VideoSource(src, start, end)
    index = source.seek_index()
    whole = _decoded(source)
    source.close()
    assert index is not None and len(index.pts) == len(whole)
    assert [f[1] + index.shift for f in whole] == list(index.pts)
    assert len(index.keys) > 2  # a keyframe every 7 frames: most seeks land before their frame
    assert index.at(0) is None and index.at(len(whole)) is None
    for i in range(1, len(whole)):
        seek = index.at(i)
        assert seek is not None and seek.index == i and seek.key <= seek.pts
        source = VideoSource(src, start, end)
        got = _decoded(source, i, seek)
        assert source.seek_misses == 0
        source.close()
        assert [g[:3] for g in got] == [w[:3] for w in whole[i:]], i
        assert all(np.array_equal(g[3], w[3]) for g, w in zip(got, whole[i:], strict=True)), i


def test_a_seek_that_lands_past_its_frame_decodes_from_the_start(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=24, size=(48, 32), gop=6, audio=None)
    source = VideoSource(src)
    index = source.seek_index()
    whole = _decoded(source)
    source.close()
    assert index is not None
    late = dataclasses.replace(index.at(8), key=index.keys[-1][1])  # the last keyframe, past frame 8
    source = VideoSource(src)
    got = [f for f in _decoded(source, 8, late) if f[3] is not None]  # frames 0-7 come without pixels
    assert source.seek_misses == 1
    assert [g[:3] for g in got] == [w[:3] for w in whole[8:]]  # frames from 8 on, numbered as ever
    assert all(np.array_equal(g[3], w[3]) for g, w in zip(got, whole[8:], strict=True))
    assert [g[0] for g in _decoded(VideoSource(src), 8)][:9] == list(range(9))  # without a seek: from 0


def test_a_damaged_packet_before_the_frame_sought_fails_as_decoding_from_the_start_does(tmp_path):
    good = make_clip(tmp_path / "good.mkv", frames=24, audio=None, gop=12)
    bad = corrupt_packet(good, tmp_path / "bad.mkv", 13)  # in the second GOP, before its last frame
    index = VideoSource(bad).seek_index()
    assert index is not None
    errors = []
    for seek in (None, index.at(23)):
        source = VideoSource(bad)
        with pytest.raises(VideoError) as e:
            _decoded(source, 23, seek)
        errors.append(e.value.message)
        assert source.seek_misses == (seek is not None)  # the seek found the damage: from the start
    assert errors[0] == errors[1] and "corrupt video packet" in errors[0]


def test_no_seek_index_where_frames_cannot_be_found_by_time(tmp_path):
    """A raw stream (timestamps made up by counting), --repair (a damaged packet's place shows
    only when decoding), and MPEG-TS (no sample table: a packet may be a field) decode from the start."""
    assert VideoSource(make_clip(tmp_path / "a.h264", frames=8, fmt="h264", audio=None)).seek_index() is None
    clip = make_clip(tmp_path / "a.mp4", frames=8, gop=4, audio=None)
    assert VideoSource(clip, repair=True).seek_index() is None
    assert VideoSource(clip).seek_index() is not None
    assert VideoSource(make_clip(tmp_path / "a.ts", frames=8, gop=4, audio=None)).seek_index() is None
    # An edit list that starts three frames after a keyframe: the demuxer hands those three over,
    # flagged to be decoded and not shown, so counting packets would number every frame wrongly.
    src = make_clip(tmp_path / "long.mp4", frames=30, gop=10, audio=None)
    trimmed = tmp_path / "trimmed.mp4"
    with av.open(str(src)) as c, av.open(str(trimmed), "w") as out:
        stream = out.add_stream_from_template(c.streams.video[0], opaque=True)
        packets = [p for p in c.demux(video=0) if p.size]
        for p in packets[10:]:  # from the second keyframe on, the fourth frame at 0
            p.pts, p.dts, p.stream = p.pts - 13 * 512, p.dts - 13 * 512, stream
            out.mux(p)
    source = VideoSource(trimmed)
    assert source.seek_index() is None and len(list(source.decode())) == 17


# -- nothing lost ------------------------------------------------------------------------------
def _mimo(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mimocli", "video", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def test_killed_run_resumes_to_the_same_video(tmp_path):
    """Kill a run (SIGKILL: a crash) after its second checkpoint; --resume finishes it, and the
    result equals an uninterrupted run packet for packet. The encoder is FFV1: x264 itself gave
    a different first packet for identical YUV input in about one fresh encoder in four under
    load, even single-threaded, which is not ours to test."""
    weights = small_weights(tmp_path / "w32.safetensors", width=32)
    # 64 frames: after the second checkpoint six more remain, so the kill lands well before the
    # end even now that inference is fast (with 40 frames a run once finished before the kill).
    src = make_clip(tmp_path / "in.mp4", frames=64, size=(192, 144), gop=12)  # the resumed run seeks
    whole = tmp_path / "whole.mkv"
    enc = ("-c", "ffv1")
    r = run("video", src, whole, "-w", weights, "--quiet", "--checkpoint", "8", "--batch", "2", *enc)
    assert r.exit_code == 0, r.output

    dst = tmp_path / "out.mkv"
    work = WorkDir(dst)
    proc = _mimo(src, dst, "-w", weights, "--quiet", "--checkpoint", "8", "--batch", "2", *enc)
    deadline = time.monotonic() + 120
    while not work.segment(1).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [work.path.name]

    r = run("video", src, dst, "-w", weights, "--quiet", "--checkpoint", "8", "--batch", "2", *enc)
    assert r.exit_code == 1 and "pass --resume to continue it" in flat(r.stderr)
    r = run("video", src, dst, "-w", weights, "--quiet", "--checkpoint", "8", "--batch", "4", "--resume", *enc)
    assert r.exit_code == 1 and "other settings (--batch (2 then, 4 now))" in flat(r.stderr)
    r = run(
        "video", src, dst, "-w", weights, "-q", "--checkpoint", "8", "-b", "2", "--resume", *enc, "--pix-fmt", "yuv444p"
    )
    assert r.exit_code == 1 and "(--pix-fmt (yuv420p then, yuv444p now))" in flat(r.stderr)  # the flag, not "streams"

    r = run("video", src, dst, "-w", weights, "--checkpoint", "8", "--batch", "2", "--resume", "--json", *enc)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["resumed"] >= 16 and info["resumed"] % 8 == 0
    assert info["resumed"] + info["deblurred"] == info["frames"] == 64
    assert packets(dst, "video") == packets(whole, "video")
    assert packets(dst, "audio") == packets(whole, "audio")
    assert not work.path.exists()


def test_ctrl_c_keeps_the_work_and_says_how_to_resume(tmp_path):
    weights = small_weights(tmp_path / "w32.safetensors", width=32)
    src = make_clip(tmp_path / "in.mkv", frames=60, size=(256, 192), audio=None)
    dst = tmp_path / "out.mkv"
    proc = _mimo(src, dst, "-w", weights, "--checkpoint", "4")
    stderr = interrupt_when(proc, WorkDir(dst).segment(0).exists)
    assert proc.returncode == 130
    assert "was not written" in stderr and "--resume" in stderr
    assert not dst.exists() and WorkDir(dst).exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["in.mkv", "w32.safetensors"]


def test_corrupt_packet_fails_clearly_or_is_repaired(tmp_path, weights):
    good = make_clip(tmp_path / "good.mkv", frames=24, audio=None)
    bad = corrupt_packet(good, tmp_path / "bad.mkv", 12)
    dst = tmp_path / "out.mkv"
    r = run("video", bad, dst, "-w", weights, "--quiet")
    assert r.exit_code == 1
    line = flat(r.stderr)
    assert re.search(r"bad\.mkv: corrupt video packet near \d\.\d{3} s", line) and "--repair" in line
    assert not dst.exists()
    r = run("video", bad, dst, "-w", weights, "--quiet", "--repair", "--resume", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["repaired"] == 1
    pts, _, _ = decode(dst)
    assert pts == decode(good)[0]  # 24 frames, the lost one at its own time


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", "missing.mp4: no such file"),
        (lambda d: _write(d / "empty.mp4", b""), "empty.mp4: is empty"),
        (lambda d: _write(d / "notes.mp4", b"not a video\n" * 50), "notes.mp4: not a video FFmpeg can read"),
        (lambda d: _audio_only(d / "song.m4a"), "song.m4a: has no video stream"),
        (lambda d: _folder(d / "emptydir"), "emptydir: holds no image files"),
        (lambda d: _undecodable(d / "evc.nut"), "evc.nut: its video codec cannot be decoded by this FFmpeg"),
    ],
    ids=["missing", "empty", "text", "audio-only", "empty-folder", "no-decoder"],
)
def test_bad_inputs_one_line_and_exit_1(tmp_path, weights, make, message):
    src = make(tmp_path)
    r = run("video", src, tmp_path / "out.mp4", "-w", weights, "--quiet")
    assert r.exit_code == 1, r.output
    assert message in flat(r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.mp4").exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _undecodable(path: Path) -> Path:
    """A real NUT file holding an MPEG-5 EVC stream, a codec this FFmpeg build has no decoder for."""
    with av.open(str(path), "w", format="nut") as out:
        s = out.add_mux_stream("evc", rate=24, width=64, height=48)
        s.time_base = Fraction(1, 1000)
        for i in range(3):
            p = av.Packet(b"\x00\x00\x00\x10" + bytes(16))
            p.pts = p.dts = i * 42
            p.time_base = Fraction(1, 1000)
            p.is_keyframe = True
            p.stream = s
            out.mux(p)
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        a = out.add_stream("aac", rate=48000, layout="mono")
        for k in range(10):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, k * 1024
            out.mux(a.encode(af))
        out.mux(a.encode())
    return path


def test_odd_size_needs_a_full_chroma_format(tmp_path, weights):
    src = make_clip(tmp_path / "odd.mkv", frames=3, size=(63, 47), pix_fmt="yuv444p", audio=None)
    r = run("video", src, tmp_path / "o.mp4", "-w", weights, "--quiet", "--pix-fmt", "yuv420p")
    assert r.exit_code == 1
    assert "63x47 cannot be encoded as yuv420p" in flat(r.stderr) and "--pix-fmt yuv444p" in flat(r.stderr)
    r = run("video", src, tmp_path / "o.mp4", "-w", weights, "--quiet")  # the input's yuv444p
    assert r.exit_code == 0, r.output
    assert decode(tmp_path / "o.mp4")[1][0].shape == (47, 63, 3)


def test_outputs_are_never_clobbered(tmp_path, weights):
    src = make_clip(tmp_path / "in.mp4", frames=3, audio=None)
    before = digest(src)
    with pytest.raises(OutputError, match="is the input"):
        deblur_video(src, src, Deblurrer(MIMOUNet(1, 8), device="cpu"))
    (tmp_path / "taken.mp4").write_bytes(b"precious")
    r = run("video", src, tmp_path / "taken.mp4", "-w", weights, "--quiet")
    assert r.exit_code == 1 and "already exists" in r.stderr and "--overwrite" in r.stderr
    assert (tmp_path / "taken.mp4").read_bytes() == b"precious"
    r = run("video", src, tmp_path / "taken.mp4", "-w", weights, "--quiet", "--overwrite")
    assert r.exit_code == 0 and len(decode(tmp_path / "taken.mp4")[0]) == 3
    r = run("video", src, tmp_path / "out.xyz", "-w", weights, "--quiet")
    assert r.exit_code == 1 and "cannot tell the container" in r.stderr
    assert digest(src) == before


def test_time_and_fps_parsing():
    assert parse_time("12.5") == 12.5
    assert parse_time("1:02.5") == 62.5
    assert parse_time("1:00:03") == 3603
    assert parse_fps("30000/1001") == Fraction(30000, 1001)
    assert parse_fps("24") == 24
    r = run("video", "a.mp4", "b.mp4", "--start", "soon")
    assert r.exit_code == 2 and "HH:MM:SS" in flat(r.output)


@pytest.mark.shared
def test_real_blurry_clip_with_aac(shared, tmp_path, weights):
    """The real REDS clip: 48 frames at 1280x720 with a stereo AAC track."""
    src = shared / "data/video/reds_020_blur_48f.mp4"
    dst = tmp_path / "reds.mp4"
    r = run("video", src, dst, "-w", weights, "--json", "--quiet")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["frames"] == 48 and (info["width"], info["height"]) == (1280, 720)
    in_pts, in_rgb, _ = decode(src)
    out_pts, out_rgb, _ = decode(dst)
    assert out_pts == in_pts
    assert packets(dst, "audio") == packets(src, "audio")
    assert abs(stream_seconds(dst) - stream_seconds(src)) <= 1 / 24
    assert psnr(in_rgb[0], out_rgb[0]) > 15  # a random tiny network changes pixels, not the picture


def test_work_of_an_older_version_is_not_resumed(tmp_path, weights):
    src = make_clip(tmp_path / "in.mp4", frames=4, audio=None)
    dst = tmp_path / "out.mp4"
    work = WorkDir(dst)
    work.start({"version": 1, "precision": "float32"})  # what mimocli 0.1 wrote
    r = run("video", src, dst, "-w", weights, "--quiet", "--resume")
    assert r.exit_code == 1 and "made by another version of mimocli" in flat(r.stderr)
    assert "--overwrite" in flat(r.stderr) and work.exists() and not dst.exists()
    r = run("video", src, dst, "-w", weights, "--quiet", "--overwrite")
    assert r.exit_code == 0, r.output
    assert dst.exists() and not work.path.exists()
