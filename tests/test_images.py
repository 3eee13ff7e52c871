from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from mimocli.atomic import atomic_write
from mimocli.errors import ImageError, OutputError
from mimocli.images import encode_image, read_image, write_image

from .conftest import photo


def _srgb() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_pillow(tmp_path, orientation):
    im = Image.fromarray(photo(20, 30))
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    im.save(path, exif=exif)
    got = read_image(path)
    assert np.array_equal(got.pixels, np.asarray(ImageOps.exif_transpose(Image.open(path))))
    written = tmp_path / "w.png"
    write_image(written, got.pixels, got.exif, got.icc)
    assert Image.open(written).getexif().get(0x0112, 1) == 1  # upright pixels, no second rotation


@pytest.mark.parametrize(("ext", "channels"), [(".png", 3), (".png", 4), (".png", 1), (".tif", 3), (".tif", 1)])
def test_sixteen_bit_roundtrip(tmp_path, ext, channels):
    arr = photo(17, 23, channels=channels, dtype=np.uint16)
    if channels == 1:
        arr = arr[:, :, 0]
    path = write_image(tmp_path / f"x{ext}", arr)
    got = read_image(path).pixels
    assert got.dtype == np.uint16 and np.array_equal(got, arr)


def test_icc_and_exif_kept(tmp_path):
    icc = _srgb()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    for ext in (".jpg", ".png", ".webp", ".tif"):
        path = write_image(tmp_path / f"m{ext}", photo(16, 16), exif.tobytes(), icc, quality=90)
        im = read_image(path)
        assert im.icc == icc, ext
        assert Image.open(path).getexif().get(0x010F) == "TestCam", ext
    path = write_image(tmp_path / "m16.png", photo(16, 16, dtype=np.uint16), exif.tobytes(), icc)
    with Image.open(path) as im:
        assert im.info.get("icc_profile") == icc and im.getexif().get(0x010F) == "TestCam"


def test_gray_alpha_and_palette(tmp_path):
    Image.fromarray(photo(10, 12)[:, :, 0]).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").pixels.shape == (10, 12)
    Image.fromarray(photo(10, 12, channels=4), "RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").pixels.shape == (10, 12, 4)
    Image.fromarray(photo(10, 12)).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").pixels.shape == (10, 12, 3)
    jpg = encode_image(photo(10, 12, channels=4), "JPEG")  # JPEG has no alpha: dropped
    assert jpg[:2] == b"\xff\xd8"


def test_bad_inputs_name_file_and_reason(tmp_path):
    with pytest.raises(ImageError, match="missing.png: no such file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.jpg").write_text("not an image at all")
    with pytest.raises(ImageError, match="not an image"):
        read_image(tmp_path / "text.jpg")
    for ext, arr in ((".jpg", photo(64, 64)), (".png", photo(64, 64)), (".png", photo(64, 64, dtype=np.uint16))):
        full = write_image(tmp_path / f"full{ext}", arr).read_bytes()
        cut = tmp_path / f"cut{ext}"
        cut.write_bytes(full[: len(full) // 2])
        with pytest.raises(ImageError, match="truncated or corrupt"):
            read_image(cut)
    write_image(tmp_path / "big.png", photo(100, 100))
    with pytest.raises(ImageError, match="exceeds --max-pixels 5,000"):
        read_image(tmp_path / "big.png", max_pixels=5000)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="cannot write"):
        write_image(tmp_path / "nope" / "x.png", photo(8, 8))
    with pytest.raises(OutputError, match="cannot write .gif"):
        write_image(tmp_path / "x.gif", photo(8, 8))


def test_rounding_not_truncation(tmp_path):
    import torch

    from mimocli.pixels import from_tensor

    t = torch.full((1, 3, 2, 2), 0.5)  # 127.5 rounds to 128 (even) and 0.998 * 255 = 254.49 to 254
    assert from_tensor(t, np.dtype(np.uint8))[0, 0, 0] == 128
    t = torch.full((1, 3, 2, 2), 254.6 / 255)
    assert from_tensor(t, np.dtype(np.uint8))[0, 0, 0] == 255


def test_side_by_side_keeps_layout_and_labels_both_halves():
    from mimocli.images import side_by_side

    for shape, dtype in (((60, 80), np.uint8), ((60, 80, 4), np.uint16), ((60, 80, 3), np.uint8)):
        a = np.zeros(shape, dtype)
        b = np.full(shape, 7, dtype)
        both = side_by_side(a, b, ("before", "after"))
        assert both.dtype == dtype and both.shape[0] == 60 and both.shape[1] == 164
        assert both.shape[2:] == shape[2:]
        peak = np.iinfo(dtype).max
        assert (both[:20, :60] == peak).any() and (both[:20, 84:144] == peak).any()  # ink in both bands
        assert (both[40:, :80] == 0).all() and (both[40:, 84:] == 7).all()
    with pytest.raises(ValueError, match="cannot compare"):
        side_by_side(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))


def test_avif_read_and_written(tmp_path, tiny_weights):
    from PIL import features

    from .test_cli import run

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF")
    Image.fromarray(photo(24, 28)).save(tmp_path / "p.avif", quality=95)
    assert read_image(tmp_path / "p.avif").pixels.shape == (24, 28, 3)
    r = run("deblur", tmp_path, "-w", tiny_weights)
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "p_deblurred.avif") as im:
        assert im.format == "AVIF" and im.size == (28, 24)


def test_read_only_types_come_out_as_png_and_16_bits_stay(tmp_path, tiny_weights):
    from .test_cli import run

    Image.fromarray(photo(24, 28)).save(tmp_path / "p.gif")
    Image.fromarray(photo(24, 28)).save(tmp_path / "q.tga")
    r = run("deblur", tmp_path, "-w", tiny_weights)
    assert r.exit_code == 0, r.output
    assert "p.gif: .gif cannot be written; writing PNG p_deblurred.png" in r.stderr
    assert read_image(tmp_path / "p_deblurred.png").pixels.shape == (24, 28, 3)


def test_animations_point_to_mimo_video(tmp_path):
    frames = [Image.fromarray(photo(24, 28, seed=i)) for i in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError, match=r"an animation of 3 frames.*mimo video"):
        read_image(tmp_path / "a.gif")


def test_dpi_and_xmp_kept_cmyk_profile_dropped(tmp_path):
    xmp = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF/></x:xmpmeta>"
    Image.fromarray(photo(24, 28)).save(tmp_path / "d.jpg", dpi=(300, 300), xmp=xmp)
    got = read_image(tmp_path / "d.jpg")
    assert got.dpi == (300, 300) and got.xmp == xmp
    for name in ("o.jpg", "o.png", "o.tif"):
        write_image(tmp_path / name, got.pixels, got.exif, got.icc, dpi=got.dpi, xmp=got.xmp)
        with Image.open(tmp_path / name) as im:
            assert tuple(round(v) for v in im.info["dpi"]) == (300, 300), name
            # TIFF keeps XMP in tag 700, PNG in an iTXt chunk, JPEG in an APP1 segment
            tiff = im.tag_v2.get(700) if name == "o.tif" else None
            kept = tiff or im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
            assert kept and "adobe:ns:meta" in (kept.decode() if isinstance(kept, bytes) else kept), name
    Image.fromarray(photo(24, 28)).convert("CMYK").save(tmp_path / "c.jpg", icc_profile=b"a CMYK profile")
    assert read_image(tmp_path / "c.jpg").icc is None  # it would mislabel the RGB output


def test_heic_phone_photos_through_the_heif_extra(tmp_path, tiny_weights):
    pillow_heif = pytest.importorskip("pillow_heif")  # mimocli[heif]
    from .test_cli import run

    pillow_heif.register_heif_opener()
    Image.fromarray(photo(32, 40)).save(tmp_path / "IMG_0001.heic", quality=95)
    assert read_image(tmp_path / "IMG_0001.heic").pixels.shape == (32, 40, 3)
    r = run("deblur", tmp_path, "-w", tiny_weights)
    assert r.exit_code == 0, r.output
    assert "writing PNG IMG_0001_deblurred.png" in r.stderr
    assert read_image(tmp_path / "IMG_0001_deblurred.png").pixels.shape == (32, 40, 3)


def test_16_bit_gray_alpha_png_stays_16_bit_gray_alpha(tmp_path, tiny_weights):
    from .test_cli import run

    rng = np.random.default_rng(0)
    la = rng.integers(0, 65536, (17, 23, 2), dtype=np.uint16)
    write_image(tmp_path / "la.png", la)
    with open(tmp_path / "la.png", "rb") as f:
        header = f.read(26)
    assert (header[24], header[25]) == (16, 4)  # 16-bit, gray+alpha: the file is what it claims
    assert np.array_equal(read_image(tmp_path / "la.png").pixels, la)
    r = run("deblur", tmp_path / "la.png", "-w", tiny_weights)
    assert r.exit_code == 0, r.output
    out = read_image(tmp_path / "la_deblurred.png").pixels
    assert out.shape == (17, 23, 2) and out.dtype == np.uint16 and np.array_equal(out[..., 1], la[..., 1])


def test_png_srgb_chunk_kept(tmp_path, tiny_weights):
    import struct
    import zlib

    from .test_cli import run

    write_image(tmp_path / "plain.png", photo(24, 28))
    data = (tmp_path / "plain.png").read_bytes()
    chunk = struct.pack(">I", 1) + b"sRGB" + b"\x00" + struct.pack(">I", zlib.crc32(b"sRGB\x00"))
    (tmp_path / "s.png").write_bytes(data[:33] + chunk + data[33:])  # right after IHDR
    assert read_image(tmp_path / "s.png").srgb == 0
    r = run("deblur", tmp_path / "s.png", "-w", tiny_weights)
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "s_deblurred.png") as im:
        assert im.info.get("srgb") == 0


def test_16_bit_tiff_keeps_exif_icc_dpi_and_xmp(tmp_path, tiny_weights):
    """OpenCV wrote 16-bit colour TIFFs without any metadata; imageio's tifffile plugin keeps it."""
    from .test_cli import run

    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x8298] = "TestCam", "Model 1", "(c) me"
    icc = bytes(range(256)) * 2
    for channels in (3, 4):
        arr = rng.integers(0, 65536, (20, 30, channels), dtype=np.uint16)
        path = write_image(tmp_path / f"in{channels}.tif", arr, exif.tobytes(), icc, dpi=(300, 300), xmp=b"<x/>")
        got = read_image(path)
        assert np.array_equal(got.pixels, arr) and got.icc == icc and got.dpi == (300, 300)
        with Image.open(path) as im:
            tags = im.getexif()
            assert (tags[0x010F], tags[0x0110], tags[0x8298]) == ("TestCam", "Model 1", "(c) me")
            assert im.tag_v2.get(700) == b"<x/>"
    r = run("deblur", tmp_path / "in3.tif", "-w", tiny_weights)
    assert r.exit_code == 0, r.output
    out = read_image(tmp_path / "in3_deblurred.tif")
    assert out.pixels.dtype == np.uint16 and out.icc == icc and out.dpi == (300, 300)
    with Image.open(tmp_path / "in3_deblurred.tif") as im:
        assert im.getexif()[0x010F] == "TestCam"


def test_tiffs_pillow_cannot_open_are_read_as_16_bit_or_refused_with_the_range(tmp_path):
    """Float16/float64 colour and 32-bit integer TIFFs (scientific cameras, HDR tools): floats in
    0..1 and integers in 0..65535 as 16-bit with a warning; other integers refused, naming the
    range and what to do; no decoder noise."""
    import tifffile

    from mimocli.errors import ImageError

    unit = np.linspace(0, 1, 20 * 30 * 3).reshape(20, 30, 3)
    cases = {
        "f16.tif": unit.astype(np.float16),
        "f64.tif": unit,
        "i32.tif": np.rint(unit * 60000).astype(np.int32),
    }
    for name, arr in cases.items():
        tifffile.imwrite(tmp_path / name, arr)
        with pytest.warns(UserWarning, match="read and written as 16-bit"):
            got = read_image(tmp_path / name).pixels
        assert got.dtype == np.uint16 and got.shape == (20, 30, 3), name
        peak = 60000 if name == "i32.tif" else 65535
        assert abs(int(got.max()) - peak) <= 40, name
    tifffile.imwrite(tmp_path / "wide.tif", np.full((4, 4, 3), 100_000, np.int32))
    with pytest.raises(ImageError, match="int32 pixels from 100000 to 100000") as e:
        read_image(tmp_path / "wide.tif")
    assert e.value.hint == "convert it to 8- or 16-bit first"


def test_every_read_error_says_what_to_do(tmp_path, monkeypatch):
    from mimocli import images
    from mimocli.errors import ImageError

    (tmp_path / "empty.png").write_bytes(b"")
    good = write_image(tmp_path / "cut.png", photo(32, 32))
    good.write_bytes(good.read_bytes()[:200])
    (tmp_path / "text.png").write_bytes(b"not an image at all")
    for name in ("missing.png", "empty.png", "cut.png", "text.png"):
        with pytest.raises(ImageError) as e:
            read_image(tmp_path / name)
        assert e.value.hint, name
    ok = write_image(tmp_path / "ok.png", photo(8, 8))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images.Image, "open", denied)  # as for a file this user may not read (root may)
    with pytest.raises(ImageError, match="cannot be read: permission denied") as e:
        read_image(ok)
    assert "truncated" not in e.value.message and e.value.hint == "check the file's permissions"


def test_max_pixels_applies_to_tiffs_pillow_cannot_open(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "f.tif", np.zeros((100, 120, 3), np.float32))
    with pytest.raises(ImageError, match=r"120x100 = 12,000 pixels exceeds --max-pixels 5,000"):
        read_image(tmp_path / "f.tif", max_pixels=5000)
