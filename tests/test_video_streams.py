"""What `mimo video` keeps of an input besides its frames, decided when the run is planned:
chapters, timecode, data streams and attachments (kept where the output's container holds them,
left out with one warning where it cannot, refused before any work where it is sound)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from mimocli.cli import app
from mimocli.video.streams import advance_timecode

from .clips import decode, make_clip, small_weights

runner = CliRunner()
TWO_CHAPTERS = [(0.0, 0.5, "one"), (0.5, 1.0, "two")]


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def weights(tmp_path) -> Path:
    return small_weights(tmp_path / "w8.safetensors")


def chapters(path: Path) -> list[tuple[float, float, str]]:
    with av.open(str(path)) as c:
        return [
            (float(ch["start"] * ch["time_base"]), float(ch["end"] * ch["time_base"]), ch["metadata"].get("title", ""))
            for ch in c.chapters()
        ]


def timecodes(path: Path) -> dict[str, str]:
    """The timecode tags, by stream type ("video" in Matroska's tag, "data" for a tmcd track)."""
    with av.open(str(path)) as c:
        return {s.type: v for s in c.streams for k, v in s.metadata.items() if k.lower() == "timecode"}


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_chapters_of_an_mp4_are_kept(tmp_path, weights, suffix):
    """Recipe: an MP4 with two chapters, as `ffmpeg -i in.mp4 -i chapters.ffmeta -map 0
    -map_chapters 1 -c copy` writes them: a text chapter track that FFmpeg reads back both as a
    data stream and as the chapters. Copying that track as a stream failed the mux (.mp4:
    InvalidDataError, .mkv: ArgumentError) after all the frames were done."""
    src = make_clip(tmp_path / "c.mp4", frames=24, chapters=TWO_CHAPTERS)
    out = tmp_path / f"o{suffix}"
    r = run("video", src, out, "-w", weights, "--threads", "1")
    assert r.exit_code == 0, r.output
    assert chapters(out) == [(0.0, 0.5, "one"), (0.5, 1.0, "two")]
    with av.open(str(out)) as c:
        kinds = [s.type for s in c.streams]
    assert kinds[:2] == ["video", "audio"]  # (MP4/MOV make their own chapter track beside them)
    assert len(decode(out)[0]) == 24
    cut = tmp_path / f"cut{suffix}"
    assert run("video", src, cut, "-w", weights, "--start", "0.5").exit_code == 0
    assert chapters(cut) == [(0.0, 0.5, "two")]  # the chapters of the range, from its start


@pytest.mark.parametrize("suffix", [".mov", ".mp4", ".mkv"])
def test_a_timecode_track_is_kept_and_moves_with_a_cut(tmp_path, weights, suffix):
    """Recipe: a MOV with a timecode track, as `ffmpeg ... -timecode 01:00:00:00 t.mov` writes it
    (a tmcd data stream). It failed the mux into .mov and .mkv. MOV and MP4 get a timecode track
    again, Matroska the TIMECODE tag; a cut starts at its own first frame's timecode."""
    src = make_clip(tmp_path / "t.mov", frames=24, timecode="01:00:00:00")
    out = tmp_path / f"o{suffix}"
    r = run("video", src, out, "-w", weights, "--threads", "1")
    assert r.exit_code == 0, r.output
    where = "video" if suffix == ".mkv" else "data"
    assert timecodes(out)[where] == "01:00:00:00"
    cut = tmp_path / f"cut{suffix}"
    assert run("video", src, cut, "-w", weights, "--start", "0.5").exit_code == 0
    assert timecodes(cut)[where] == "01:00:00:12"  # 0.5 s at 24 fps: 12 frames on


def test_what_the_container_cannot_hold_is_left_out_with_one_warning_before_any_work(tmp_path, weights):
    """A Matroska attachment (a font) cannot go into MP4: left out, one warning naming it, said
    when the run is planned (the dry run says it too); an audio stream a WebM cannot hold is
    refused before the model is loaded."""
    src = make_clip(tmp_path / "a.mkv", frames=6, attachment=True)
    r = run("video", src, tmp_path / "o.mp4", "-w", weights, "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    assert "attachment stream #2" in r.stdout and "mp4 cannot hold it" in r.stdout
    r = run("video", src, tmp_path / "o.mp4", "-w", weights)
    assert r.exit_code == 0, r.output
    said = [line for line in r.stderr.splitlines() if "attachment stream #2" in line]
    assert len(said) == 1 and "left out" in said[0], r.stderr
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
    aac = make_clip(tmp_path / "aac.mp4", frames=6)
    r = run("video", aac, tmp_path / "o.webm", "-w", tmp_path / "no-such-weights.safetensors")
    assert r.exit_code == 1  # refused for the stream before the (missing) weights are looked at
    assert "audio stream #1 (aac) cannot be stored in webm" in r.stderr and "write .mkv" in r.stderr


@pytest.mark.parametrize(
    ("timecode", "frames", "rate", "moved"),
    [
        ("01:00:00:00", 12, 24, "01:00:00:12"),
        ("00:59:59:23", 1, 24, "01:00:00:00"),
        ("23:59:59:24", 1, 25, "00:00:00:00"),  # (an input's own odd value: carried on)
        ("00:00:59;29", 1, 30, "00:01:00;02"),  # drop-frame: ;00 and ;01 of minute 1 do not exist
        ("00:09:59;29", 1, 30, "00:10:00;00"),  # ... except every tenth minute
        ("00:00:00;00", 1800, 30, "00:01:00;02"),
        ("not a timecode", 5, 24, "not a timecode"),
    ],
)
def test_timecodes_move_on_as_smpte_counts(timecode, frames, rate, moved):
    from fractions import Fraction

    assert advance_timecode(timecode, frames, Fraction(rate)) == moved


def alpha_mode_without_alpha(path: Path, frames: int = 6) -> Path:
    """What Chrome's MediaRecorder writes: a WebM whose header says AlphaMode 1 (the stream's
    parameters say yuva420p) while its packets carry no alpha (no BlockAdditional)."""
    from fractions import Fraction

    from .clips import picture

    with av.open(str(path), "w") as out:
        v = out.add_stream("libvpx-vp9", rate=24)
        v.width, v.height, v.pix_fmt = 64, 48, "yuva420p"  # what the muxer's header says
        enc = av.CodecContext.create("libvpx-vp9", "w")  # what the packets are
        enc.width, enc.height, enc.pix_fmt, enc.time_base, enc.framerate = 64, 48, "yuv420p", Fraction(1, 24), 24
        for i in [*range(frames), None]:
            f = None
            if i is not None:
                f = av.VideoFrame.from_ndarray(picture(i, 48, 64), format="rgb24").reformat(format="yuv420p")
                f.pts, f.time_base = i, Fraction(1, 24)
            for p in enc.encode(f):
                p.stream = v
                out.mux(p)
    return path


def test_a_webm_that_only_declares_alpha_is_not_transparent(tmp_path, weights):
    src = alpha_mode_without_alpha(tmp_path / "recorded.webm")
    with av.open(str(src)) as c:
        assert c.streams.video[0].metadata.get("alpha_mode") == "1"  # the recipe holds
    r = run("video", src, tmp_path / "o.mp4", "-w", weights)
    assert r.exit_code == 0, r.output  # refused as transparent (x264 holds no alpha) before
    assert len(decode(tmp_path / "o.mp4")[0]) == 6


def test_a_raw_stream_whose_timing_is_its_time_base_is_taken_at_25_fps(tmp_path, weights):
    """Recipe: the video of an MP4 cut out as a raw H.264 stream (`ffmpeg -i in.mp4 -map 0:v -c
    copy s.h264`): x264 wrote the container's time base (1/12288) into the VUI timing, which then
    reads as 12288 fps. It made 12 frames last 1 ms with no word; FFmpeg assumes 25 fps."""
    mp4 = make_clip(tmp_path / "m.mp4", frames=12, audio=None)
    raw = tmp_path / "s.h264"
    with av.open(str(mp4)) as c, av.open(str(raw), "w", format="h264") as o:
        s = o.add_stream_from_template(c.streams.video[0], opaque=True)
        for p in c.demux(c.streams.video[0]):
            if p.size:
                p.stream = s
                o.mux(p)
    with av.open(str(raw)) as c:
        assert c.streams.video[0].codec_context.framerate > 1000  # the recipe holds
    r = run("video", raw, tmp_path / "o.mp4", "-w", weights)
    assert r.exit_code == 0, r.output
    assert "timing says 12288 fps, which is its time base" in " ".join(r.stderr.split())
    with av.open(str(tmp_path / "o.mp4")) as c:
        v = c.streams.video[0]
        assert v.frames == 12 and float(v.duration * v.time_base) == pytest.approx(12 / 25)
    r = run("video", raw, tmp_path / "o24.mp4", "-w", weights, "--fps", "24")
    assert r.exit_code == 0 and "Warning" not in r.stderr, r.output  # the rate given, nothing to say
    with av.open(str(tmp_path / "o24.mp4")) as c:
        v = c.streams.video[0]
        assert float(v.duration * v.time_base) == pytest.approx(12 / 24)


def decoded_audio(path: Path) -> tuple[float, np.ndarray]:
    """The first audio stream as a player hears it (an MP4 edit list applied): its start in
    seconds and its first channel's samples."""
    with av.open(str(path)) as c:
        frames = [(float(f.pts * f.time_base), f.to_ndarray()[0]) for f in c.decode(c.streams.audio[0])]
    return frames[0][0], np.concatenate([a for _, a in frames])


def first_frame_time(path: Path) -> float:
    with av.open(str(path)) as c:
        return next(float(f.pts * f.time_base) for f in c.decode(c.streams.video[0]))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_mp3_audio_of_a_cut_sounds_as_the_input_from_its_first_sample(tmp_path, weights, suffix):
    """Recipe: a clip with MP3 audio (LAME, 48 kHz), cut mid-file with --start 0.75. One priming
    packet is enough for AAC, not for MP3, whose frames borrow bits from the frames before them:
    its first 24-28 ms decoded wrong. The decoded audio from the cut's first frame on must be the
    input's over the same span."""
    src = make_clip(tmp_path / f"mp3{suffix}", frames=48, audio="libmp3lame")
    out = tmp_path / f"cut{suffix}"
    r = run("video", src, out, "-w", weights, "--start", "0.75", "--end", "1.75")
    assert r.exit_code == 0, r.output
    start_in, audio_in = decoded_audio(src)
    start_out, audio_out = decoded_audio(out)
    o = round((first_frame_time(out) - start_out) * 48000)  # where the cut's first frame is, in samples
    i = round((0.75 - start_in) * 48000)
    span = 24000  # half a second from the cut on
    assert len(audio_out) >= o + span
    assert np.abs(audio_out[o : o + span] - audio_in[i : i + span]).max() < 1e-6


def interlaced_clip(path: Path, order: str, frames: int = 8) -> Path:
    """Interlaced H.264 as a broadcast or camcorder source is: x264 with tff=1 (or bff=1)."""
    from .clips import picture

    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 128, 96, "yuv420p"
        v.options = {"x264-params": f"{order}=1"}
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(picture(i, 96, 128), format="rgb24")
            f.pts = i
            out.mux(v.encode(f))
        out.mux(v.encode())
    return path


@pytest.mark.parametrize(("order", "field_order"), [("tff", 2), ("bff", 3)])
@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "h264"), (".mkv", "ffv1")])
def test_interlaced_input_stays_interlaced_with_a_warning(tmp_path, weights, order, field_order, suffix, codec):
    """It came out flagged progressive with no word. The frames go through the network whole
    (both fields together), which one warning says; the output keeps the field order: x264
    encodes interlaced in it, other encoders carry it as the stream's tag."""
    src = interlaced_clip(tmp_path / f"{order}.mp4", order)
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.field_order == field_order  # the recipe holds
    out = tmp_path / f"o{suffix}"
    r = run("video", src, out, "-w", weights, "-c", codec)
    assert r.exit_code == 0, r.output
    said = [line for line in " ".join(r.stderr.split()).split("Warning: ") if "interlaced" in line]
    assert len(said) == 1 and "deblurred whole" in said[0] and "same field order" in said[0], r.stderr
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.codec_context.field_order == field_order
        if codec == "h264":
            assert next(c.decode(s)).interlaced_frame  # encoded as fields, not just tagged
    assert len(decode(out)[0]) == 8


def ftyp(path: Path) -> tuple[bytes, int, list[bytes]]:
    import struct

    data = path.read_bytes()
    size, kind = struct.unpack(">I4s", data[:8])
    assert kind == b"ftyp"
    return data[8:12], struct.unpack(">I", data[12:16])[0], [data[i : i + 4] for i in range(16, size, 4)]


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_the_major_brand_and_its_minor_version_are_kept(tmp_path, weights, suffix):
    """Recipe: an MP4/MOV whose ftyp says major brand mp42, minor version 1 (a camera's own),
    patched in place into a clip PyAV wrote. The minor version was rewritten (FFmpeg writes 512
    or 0); the compatible brands stay the muxer's, which say what the written file conforms to."""
    import struct

    src = make_clip(tmp_path / f"cam{suffix}", frames=4, audio=None, brand="mp42")
    data = bytearray(src.read_bytes())
    data[12:16] = struct.pack(">I", 1)
    src.write_bytes(bytes(data))
    assert ftyp(src)[:2] == (b"mp42", 1)  # the recipe holds
    out = tmp_path / f"o{suffix}"
    r = run("video", src, out, "-w", weights)
    assert r.exit_code == 0, r.output
    assert ftyp(out)[:2] == (b"mp42", 1)
    assert len(decode(out)[0]) == 4


def test_the_last_aac_packet_keeps_its_length(tmp_path, weights):
    """Recipe: an MP4 whose last AAC packet lasts 430 samples (remuxed with that duration). It
    was reported to grow to 1024 in the output MP4; it keeps 430. (FFmpeg's Matroska muxer writes
    AAC blocks without a duration, so there a player takes the last one as 1024 samples.)"""
    src = make_clip(tmp_path / "a.mp4", frames=24)
    short = tmp_path / "short.mp4"
    with av.open(str(src)) as c, av.open(str(short), "w") as o:
        streams = {s.index: o.add_stream_from_template(s, opaque=True) for s in c.streams}
        packets = [p for p in c.demux() if p.size]
        last = max(i for i, p in enumerate(packets) if p.stream.type == "audio")
        for i, p in enumerate(packets):
            if i == last:
                p.duration = 430
            p.stream = streams[p.stream_index]
            o.mux(p)
    for args in ([], ["--start", "0.25"]):
        out = tmp_path / "o.mp4"
        assert run("video", short, out, "-w", weights, "--overwrite", *args).exit_code == 0
        with av.open(str(out)) as c:
            durations = [p.duration for p in c.demux(c.streams.audio[0]) if p.size]
        assert durations[-1] == 430, durations[-3:]
