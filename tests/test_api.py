"""`mimocli.deblur`: one call, any kind of image in, the same kind out."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mimocli
from mimocli.errors import OutputError
from mimocli.images import read_image, write_image

from .conftest import photo


def test_numpy_in_numpy_out_every_layout(tiny_weights):
    for channels, dtype in ((3, np.uint8), (4, np.uint8), (1, np.uint16), (3, np.float32)):
        img = photo(24, 28, channels=channels, dtype=np.uint8 if dtype == np.float32 else dtype)
        if dtype == np.float32:
            img = img.astype(np.float32) / 255
        out = mimocli.deblur(img, weights=tiny_weights, device="cpu")
        assert isinstance(out, np.ndarray) and out.shape == img.shape and out.dtype == img.dtype
        if channels == 4:
            assert np.array_equal(out[..., 3], img[..., 3])  # alpha untouched
    gray = photo(24, 28, channels=1)[..., 0]
    assert mimocli.deblur(gray, weights=tiny_weights, device="cpu").shape == (24, 28)


def test_read_only_array_works_without_a_warning(tiny_weights):
    img = photo(24, 28)
    img.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = mimocli.deblur(img, weights=tiny_weights, device="cpu")
    assert out.shape == img.shape and out.flags.writeable


def test_pil_in_pil_out_keeps_mode_and_profile(tiny_weights):
    for mode in ("RGB", "RGBA", "L", "LA", "P"):
        im = Image.fromarray(photo(24, 28)).convert(mode)
        im.info["icc_profile"] = b"fake-profile"
        out = mimocli.deblur(im, weights=tiny_weights, device="cpu")
        assert isinstance(out, Image.Image) and out.size == (28, 24)
        assert out.mode == ("RGB" if mode == "P" else mode)
        assert out.info["icc_profile"] == b"fake-profile"
    deep = Image.fromarray(photo(24, 28, channels=1, dtype=np.uint16)[..., 0])
    assert mimocli.deblur(deep, weights=tiny_weights, device="cpu").mode == "I;16"


def test_tensor_in_tensor_out(tiny_weights):
    x = torch.rand(3, 24, 28)
    y = mimocli.deblur(x, weights=tiny_weights, device="cpu")
    assert isinstance(y, torch.Tensor) and y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    batch = torch.rand(2, 1, 24, 28, dtype=torch.float64)
    z = mimocli.deblur(batch, weights=tiny_weights, device="cpu")
    assert z.shape == batch.shape and z.dtype == torch.float64
    as_bytes = torch.from_numpy(photo(24, 28)).permute(2, 0, 1).contiguous()  # uint8 by the array rules
    got = mimocli.deblur(as_bytes, weights=tiny_weights, device="cpu")
    assert got.dtype == torch.uint8 and got.shape == as_bytes.shape
    expect = mimocli.deblur(photo(24, 28), weights=tiny_weights, device="cpu")
    assert np.abs(got.permute(1, 2, 0).numpy().astype(int) - expect.astype(int)).max() <= 1
    with pytest.raises(mimocli.ImageError, match=r"float values run from -0.5 to 1.*\[0, 1\]"):
        mimocli.deblur(torch.full((3, 8, 8), -0.5).index_fill_(1, torch.tensor([0]), 1.0), weights=tiny_weights)


def test_every_dtype_by_its_range_and_garbage_refused(tiny_weights):
    """Integers by their values (0..255: 8-bit, 0..65535: 16-bit), floats of any width in [0, 1];
    anything else an ImageError naming the range, never a mangled image."""
    kw = {"weights": tiny_weights, "device": "cpu"}
    eight = photo(24, 28)
    ref8 = mimocli.deblur(eight, **kw)
    for dtype in (np.int16, np.int32, np.int64, np.uint32, np.uint64):
        out = mimocli.deblur(eight.astype(dtype), **kw)
        assert out.dtype == dtype and np.array_equal(out, ref8.astype(dtype)), dtype
    deep = photo(24, 28, dtype=np.uint16)
    ref16 = mimocli.deblur(deep, **kw)
    out = mimocli.deblur(deep.astype(np.int64), **kw)
    assert out.dtype == np.int64 and np.array_equal(out, ref16.astype(np.int64))
    unit = eight.astype(np.float32) / 255
    ref = mimocli.deblur(unit, **kw)
    for dtype in (np.float16, np.float64):
        out = mimocli.deblur(unit.astype(dtype), **kw)
        assert out.dtype == dtype and np.abs(out.astype(np.float32) - ref).max() < 2e-3, dtype
    bad = [
        (eight.astype(np.int16) - 255, "int16 values run from -"),
        (np.full((8, 8, 3), 70000, np.uint32), "values run from 70000 to 70000"),
        (np.zeros((0, 0, 3), np.uint8), "is empty"),
        (np.where(unit > 0.5, np.nan, unit), "NaN"),
        (unit * 2, "float values run from"),
        (eight > 100, "bool, which holds no pixels"),
    ]
    for image, message in bad:
        with pytest.raises(mimocli.ImageError, match=message):
            mimocli.deblur(image, **kw)


def test_pil_float_and_32_bit_modes_as_the_cli_reads_them(tiny_weights):
    kw = {"weights": tiny_weights, "device": "cpu"}
    gray = photo(24, 28)[:, :, 0]
    ref = mimocli.deblur(gray.astype(np.float32) / 255, **kw)
    f = mimocli.deblur(Image.fromarray(gray.astype(np.float32) / 255, mode="F"), **kw)
    assert f.mode == "F" and np.abs(np.asarray(f) - ref).max() < 1e-6 and np.asarray(f).mean() > 0.2  # not black
    i = mimocli.deblur(Image.fromarray(gray.astype(np.int32) * 257, mode="I"), **kw)
    assert i.mode == "I" and np.asarray(i).max() > 255  # read and written as 16-bit values


def test_path_in_path_out_beside_it(tmp_path, tiny_weights):
    src = write_image(tmp_path / "shot.jpg", photo(24, 28))
    out = mimocli.deblur(str(src), weights=tiny_weights, device="cpu")
    assert out == tmp_path / "shot_deblurred.jpg" and read_image(out).pixels.shape == (24, 28, 3)
    with pytest.raises(OutputError, match="already exists"):
        mimocli.deblur(src, weights=tiny_weights, device="cpu")
    assert mimocli.deblur(src, weights=tiny_weights, device="cpu", output=tmp_path / "o.png") == tmp_path / "o.png"
    with pytest.raises(OutputError, match="is the input"):
        mimocli.deblur(src, weights=tiny_weights, device="cpu", output=src, overwrite=True)


def test_same_settings_reuse_the_loaded_model(tiny_weights):
    from mimocli.api import deblurrer

    assert deblurrer(weights=tiny_weights, device="cpu") is deblurrer(weights=tiny_weights, device="cpu")
    with pytest.raises(TypeError, match="cannot deblur a list"):
        mimocli.deblur([1, 2, 3], weights=tiny_weights, device="cpu")


def test_one_line_with_the_bundled_model(tmp_path):
    """The README's Python example, offline: the bundled model, no download."""
    out = mimocli.deblur(photo(32, 32), variant="lite")
    assert out.shape == (32, 32, 3)
    assert isinstance(Path(mimocli.__file__), Path)
