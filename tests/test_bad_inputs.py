"""Bad and odd inputs: one line each, the rest of a batch still done, nothing wrong reported as a success."""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from mimocli.cli import app
from mimocli.engine import Deblurrer
from mimocli.errors import NotFiniteError
from mimocli.images import read_image, write_image
from mimocli.video import WorkDir

from .clips import decode, make_clip, small_weights
from .conftest import photo, tiny_model

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def mimo(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A real `mimo` process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mimocli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Error:")]


def tiled_tiff(path: Path, width: int, height: int, tile_w: int, tile_h: int) -> Path:
    """An 8-bit RGB TIFF with one tile of tile_w x tile_h; a zero side makes the tile run
    outside the image (Pillow: 'tile cannot extend outside image')."""
    entries = [(256, width), (257, height), (258, None), (259, 1), (262, 2), (277, 3), (284, 1)]
    entries += [(322, tile_w), (323, tile_h), (324, None), (325, None)]
    n = len(entries)
    bps_at = 8 + 2 + 12 * n + 4
    data_at = bps_at + 6
    size = max(tile_w, 1) * max(tile_h, 1) * 3
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, n))
    for tag, value in entries:
        if tag == 258:
            out += struct.pack("<HHII", tag, 3, 3, bps_at)
        elif tag in (324, 325):
            out += struct.pack("<HHII", tag, 4, 1, data_at if tag == 324 else size)
        else:
            out += struct.pack("<HHIHH", tag, 3, 1, value, 0)
    out += struct.pack("<I", 0) + struct.pack("<3H", 8, 8, 8) + bytes(range(256)) * (size // 256 + 1)
    path.write_bytes(bytes(out[: data_at + size]))
    return path


def test_a_file_of_a_type_mimo_cannot_write_fails_alone(tmp_path, tiny_weights):
    folder = tmp_path / "r"
    folder.mkdir()
    write_image(folder / "a.jpg", photo(40, 52))
    (folder / "n.txt").write_text("x")
    Image.fromarray(photo(20, 24)).save(folder / "g.gif")
    r = run("deblur", f"{folder}/*", "-w", tiny_weights)
    assert r.exit_code == 1
    assert (folder / "a_deblurred.jpg").exists()
    lines = errors(r.stderr)
    assert len(lines) == 1, r.stderr
    assert "n.txt: .txt is not an image type mimo reads" in lines[0]
    assert "g.gif: .gif cannot be written; writing PNG g_deblurred.png" in r.stderr  # read, written as PNG
    assert read_image(folder / "g_deblurred.png").pixels.shape == (20, 24, 3)
    assert "Deblurred 2 of 3 file(s)" in r.stderr


def test_the_real_reason_comes_first(tmp_path, tiny_weights):
    (tmp_path / "empty").mkdir()
    write_image(tmp_path / "a.png", photo(24, 28))
    r = run(
        "deblur", tmp_path / "empty", tmp_path / "typo", tmp_path / "x.heic", tmp_path / "a.png", "-w", tiny_weights
    )
    assert r.exit_code == 1
    lines = errors(r.stderr)
    assert len(lines) == 3, r.stderr
    assert "empty: folder holds no images" in lines[0]
    assert "typo: no such file" in lines[1]
    assert "x.heic: no such file" in lines[2]
    assert (tmp_path / "a_deblurred.png").exists()


def test_a_decoder_failure_is_one_line_and_the_batch_goes_on(tmp_path, tiny_weights):
    good1 = write_image(tmp_path / "good1.png", photo(24, 28))
    bad = tiled_tiff(tmp_path / "malformed_tile.tif", 32, 32, 0, 16)
    good2 = write_image(tmp_path / "good2.jpg", photo(24, 28, seed=1))
    done = mimo("deblur", good1, bad, good2, "-w", tiny_weights, "--device", "cpu")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = errors(done.stderr)
    assert len(lines) == 1 and "malformed_tile.tif: " in lines[0], done.stderr
    assert (tmp_path / "good1_deblurred.png").exists() and (tmp_path / "good2_deblurred.jpg").exists()
    assert not (tmp_path / "malformed_tile_deblurred.tif").exists()


def short_strips(path: Path, pixels: np.ndarray, rows: int, **options: object) -> Path:
    """A TIFF whose header says ``rows`` rows (ImageLength and RowsPerStrip patched) while its one
    strip holds the ``len(pixels)`` rows written: OpenCV reads the compressed one with the rows the
    strip lacks left black (64 of 200: 136 black rows) and no error."""
    import tifffile

    tifffile.imwrite(path, pixels, rowsperstrip=len(pixels), **options)
    data = bytearray(path.read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (257, 278):  # ImageLength, RowsPerStrip
            data[entry + 8 : entry + 12] = struct.pack("<HH", rows, 0) if kind == 3 else struct.pack("<I", rows)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_a_tiff_whose_strips_are_shorter_than_its_header_says_is_refused(tmp_path, tiny_weights, bits, compression):
    pixels = photo(64, 80) if bits == 8 else photo(64, 80, dtype=np.uint16)
    bad = short_strips(tmp_path / "short.tif", pixels, 200, compression=compression)
    if compression:  # the recipe reproduces what a user saw: OpenCV alone fills the rest with black
        black = cv2.imread(str(bad), cv2.IMREAD_UNCHANGED)
        assert black is None or (black.reshape(200, -1).max(axis=1) == 0).sum() == 136
    done = mimo("deblur", bad, "-w", tiny_weights, "--device", "cpu")
    lines = errors(done.stderr)
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "short.tif: truncated or corrupt image" in lines[0] and "copy or export it again" in lines[0]
    assert not (tmp_path / "short_deblurred.tif").exists()


def test_a_valid_tiled_tiff_is_read_and_written_readable(tmp_path, tiny_weights):
    src = tiled_tiff(tmp_path / "tiled.tif", 32, 32, 48, 48)
    r = run("deblur", src, "-w", tiny_weights)
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "tiled_deblurred.tif") as im:
        im.load()
        assert im.size == (32, 32) and im.mode == "RGB"


def test_float_tiffs_come_out_as_valid_16_bit_tiffs(tmp_path, tiny_weights):
    rng = np.random.default_rng(0)
    gray = rng.random((40, 36)).astype(np.float32)
    Image.fromarray(gray, mode="F").save(tmp_path / "gray32f.tif")
    rgb = rng.random((28, 44, 3)).astype(np.float32)
    cv2.imwrite(str(tmp_path / "rgb32f.tif"), rgb[:, :, ::-1])
    assert np.array_equal(read_image(tmp_path / "gray32f.tif").pixels, np.rint(gray * 65535).astype(np.uint16))
    r = run("deblur", tmp_path / "gray32f.tif", tmp_path / "rgb32f.tif", "-w", tiny_weights)
    assert r.exit_code == 0, r.output
    assert "floating-point pixels are read and written as 16-bit" in r.stderr
    for name, shape in (("gray32f_deblurred.tif", (40, 36)), ("rgb32f_deblurred.tif", (28, 44, 3))):
        with Image.open(tmp_path / name) as im:
            im.load()  # a readable TIFF
        got = read_image(tmp_path / name).pixels
        assert got.shape == shape and got.dtype == np.uint16
    hdr = (rng.random((16, 16)) * 4).astype(np.float32)
    Image.fromarray(hdr, mode="F").save(tmp_path / "hdr.tif")
    r = run("deblur", tmp_path / "hdr.tif", "-w", tiny_weights)
    assert r.exit_code == 1 and "floating-point pixels outside 0..1" in r.stderr
    assert not (tmp_path / "hdr_deblurred.tif").exists()


def test_two_inputs_for_one_output_are_refused_before_any_work(tmp_path, tiny_weights):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        write_image(tmp_path / d / "x.png", photo(24, 28, seed=ord(d)))
    out = tmp_path / "out"
    r = run("deblur", tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", "-o", out, "--overwrite", "-w", tiny_weights)
    assert r.exit_code == 1
    assert "x_deblurred.png: both" in r.stderr and "nothing was done" in r.stderr
    assert not out.exists()
    r = run("deblur", tmp_path / "a" / "x.png", tmp_path / "b", "-o", out, "-w", tiny_weights)
    assert r.exit_code == 1 and "both" in r.stderr and not out.exists()


def test_weights_with_nan_are_refused_and_nan_output_is_an_error(tmp_path, tiny_weights):
    write_image(tmp_path / "a.png", photo(24, 28))
    sd = load_file(tiny_weights)
    key = next(k for k in sd if k.endswith("weight"))
    sd[key] = torch.full_like(sd[key], float("nan"))
    save_file(sd, tmp_path / "nan.safetensors")
    r = run("deblur", tmp_path / "a.png", "-w", tmp_path / "nan.safetensors")
    assert r.exit_code == 1 and "tensors hold NaN/Inf values" in r.stderr and "nan.safetensors" in r.stderr
    assert not (tmp_path / "a_deblurred.png").exists()

    model = tiny_model()  # finite weights that still overflow: the fp32 redo cannot help
    with torch.no_grad():
        next(model.parameters()).fill_(3e38)
    for precision in ("fp32", "bf16"):
        d = Deblurrer(model, device="cpu", precision=precision, tile=0)
        with pytest.raises(NotFiniteError, match="NaN/Inf values, in fp32 too"):
            d(photo(24, 28))


# -- video ---------------------------------------------------------------------------------------
def faststart(src: Path, dst: Path) -> Path:
    """``src`` remuxed with its index first, as phones and web uploads write MP4: a cut copy of
    it still opens (a cut at the index would not)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return dst


def test_a_cut_short_video_is_an_error_unless_repaired(tmp_path):
    weights = small_weights(tmp_path / "w.safetensors")
    whole = faststart(make_clip(tmp_path / "made.mp4", frames=48, size=(96, 64)), tmp_path / "whole.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out = tmp_path / "out.mp4"
    done = mimo("video", cut, out, "-w", weights, "--device", "cpu")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(errors(done.stderr)) == 1
    assert "cut.mp4: " in done.stderr and "--repair" in done.stderr
    assert not out.exists()
    early = run("video", cut, out, "-w", tmp_path / "not-loaded.safetensors")
    assert early.exit_code == 1 and "cut short" in early.stderr  # found before the weights, the decode and the work
    assert "not-loaded" not in early.stderr and not WorkDir(out).exists()
    r = run("video", cut, out, "-w", weights, "--repair", "--resume", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["missing"] > 10 and summary["frames"] + summary["missing"] >= 44
    assert "cut short" in r.stderr and "missing from the cut-short input" in r.stderr
    assert len(decode(out)[0]) == summary["frames"]
    with av.open(str(out)) as c:  # the audio packet the cut went through is not copied half
        for packet in c.demux(c.streams.audio[0]):
            packet.decode()  # raises on a cut-short packet


def test_damaged_packets_are_an_error_unless_repaired_and_then_counted(tmp_path):
    """Recipe: an H.264 MP4 (48 frames, a keyframe every 12) with 40 bytes overwritten in the
    middle of video packets 20 and 30, sizes unchanged. The decoder conceals the damage (no
    error from FFmpeg), which passed in silence: "48 of 48", exit 0."""
    weights = small_weights(tmp_path / "w.safetensors")
    made = make_clip(tmp_path / "made.mp4", frames=48, size=(128, 96), audio=None, gop=12)
    with av.open(str(made)) as c:
        where = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    data = bytearray(made.read_bytes())
    noise = np.random.default_rng(1).integers(0, 256, 40, dtype=np.uint8).tobytes()
    for k in (20, 30):
        pos, size = where[k]
        data[pos + size // 2 : pos + size // 2 + 40] = noise
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    done = mimo("video", damaged, out, "-w", weights, "--device", "cpu")
    lines = errors(done.stderr)
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "damaged.mp4: damaged video data near 0.833 s" in lines[0] and "--repair" in lines[0]
    assert not out.exists()
    r = run("video", damaged, out, "-w", weights, "--repair", "--resume", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["frames"] == 48 and 2 <= summary["damaged"] <= 24  # the two, and what refers to them
    said = " ".join(r.stderr.split())
    assert f"{summary['damaged']} frame(s) from 0.833 s on were decoded from damaged data" in said
    assert len(decode(out)[0]) == 48


def test_no_frames_in_range_is_an_error_that_names_the_length(tmp_path):
    weights = small_weights(tmp_path / "w.safetensors")
    clip = make_clip(tmp_path / "clip.mp4", frames=24)
    r = run("video", clip, tmp_path / "o.mp4", "-w", weights, "--start", "50")
    assert r.exit_code == 1 and "--start 50 s is at or past the end" in r.stderr and "1.00 s long" in r.stderr
    r = run("video", clip, tmp_path / "o.mp4", "-w", weights, "--start", "0.43", "--end", "0.44")
    assert r.exit_code == 1 and "no frames to deblur between 0.43 s and 0.44 s" in r.stderr, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "w.safetensors"]


def test_video_output_that_cannot_be_written_is_one_line(tmp_path):
    weights = small_weights(tmp_path / "w.safetensors")
    clip = make_clip(tmp_path / "clip.mp4", frames=10, size=(160, 120), audio=None)
    (tmp_path / "taken.mp4").mkdir()
    r = run("video", clip, tmp_path / "taken.mp4", "-w", weights, "--overwrite")
    assert r.exit_code == 1 and "taken.mp4: is a folder" in r.stderr
    # A full disk, as a process sees one: writes past RLIMIT_FSIZE fail with EFBIG.
    limit = 50_000  # 2-frame segments fit (about 21 kB), the whole video (about 107 kB) does not
    out = tmp_path / "big.mkv"
    done = subprocess.run(
        [sys.executable, "-m", "mimocli", "video", clip, out, "-w", weights, "--codec", "ffv1", "--checkpoint", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(errors(done.stderr)) == 1
    assert "big.mkv: cannot write (File too large)" in done.stderr and "--resume" in done.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    r = run("video", clip, out, "-w", weights, "--codec", "ffv1", "--checkpoint", "2", "--resume")
    assert r.exit_code == 0, r.output
    assert len(decode(out)[0]) == 10


def test_a_photo_that_cannot_be_written_says_what_to_do(tmp_path, tiny_weights):
    """A full disk, as the process sees one (writes past RLIMIT_FSIZE fail with EFBIG): one line
    naming the output, the cause and the fix; nothing half-written left; the causes a disk gives
    get their own fixes."""
    import errno

    from mimocli.atomic import write_failed

    src = write_image(tmp_path / "big.png", photo(160, 200))
    limit = 20_000  # the input (about 90 kB) is read; the result cannot be written
    done = subprocess.run(
        [sys.executable, "-m", "mimocli", "deblur", src, "-w", tiny_weights, "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    lines = errors(done.stderr)
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "big_deblurred.png: cannot write (File too large)" in lines[0] and "write elsewhere" in lines[0]
    assert not list(tmp_path.glob("big_deblurred*")) and not list(tmp_path.glob(".big_deblurred*"))
    full = write_failed(tmp_path / "o.png", OSError(errno.ENOSPC, "No space left on device"))
    assert str(full) == (
        f"{tmp_path / 'o.png'}: cannot write (No space left on device) "
        f"(free some space on the disk that holds {tmp_path}, or write elsewhere)"
    )
    assert "is writable" in str(write_failed(tmp_path / "o.png", OSError(errno.EROFS, "Read-only file system")))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_video_into_a_read_only_folder_is_one_line(tmp_path):
    weights = small_weights(tmp_path / "w.safetensors")
    clip = make_clip(tmp_path / "clip.mp4", frames=3, audio=None)
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    r = run("video", clip, ro / "o.mp4", "-w", weights)
    assert r.exit_code == 1 and "o.mp4: cannot write" in r.stderr and "writable" in r.stderr


def test_leftovers_of_killed_writers_go_with_the_next_success(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "clip.mp4", frames=3, audio=None)
    photo_in = write_image(tmp_path / "a.png", photo(24, 28))
    stale = [tmp_path / ".o.mp4.k1ll3d_9.part", tmp_path / ".a_deblurred.png.abcd1234.part"]
    other = tmp_path / ".other.mp4.abcd1234.part"  # another output's: not ours to remove
    for p in (*stale, other):
        p.write_bytes(b"half")
    assert run("video", clip, tmp_path / "o.mp4", "-w", tiny_weights).exit_code == 0
    assert run("deblur", photo_in, "-w", tiny_weights).exit_code == 0
    assert not any(p.exists() for p in stale) and other.exists()


def test_a_file_in_the_way_of_the_output_folder_is_named(tmp_path, tiny_weights):
    write_image(tmp_path / "a.png", photo(24, 28))
    (tmp_path / "blocker").write_text("x")
    r = run("deblur", tmp_path / "a.png", "-o", tmp_path / "blocker" / "sub", "-w", tiny_weights)
    assert r.exit_code == 1 and "a file is in the way" in r.stderr and "Traceback" not in r.output
