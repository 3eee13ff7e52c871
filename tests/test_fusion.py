"""oneDNN's fused convolutions (mimocli.fusion): the same outputs as the plain network, up to
rounding, for MIMO-UNet and XYDeblur, in fp32 and bf16, through the Deblurrer on the CPU; and an
overflow still ends in NaN, as the engine needs to refuse it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mimocli import fusion
from mimocli.arch import MIMOUNet
from mimocli.engine import Deblurrer
from mimocli.xydeblur import XYDeblur

from .conftest import SmallMemory, photo

pytestmark = pytest.mark.skipif(not fusion.available(), reason="this torch has no oneDNN fused convolutions")


def networks() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [MIMOUNet(2, 16).eval(), XYDeblur(1, 16).eval()]


@pytest.mark.parametrize("network", [0, 1], ids=["mimo-unet", "xydeblur"])
def test_the_fused_network_gives_the_plain_one_s_outputs(network):
    model = networks()[network]
    x = torch.rand(1, 3, 48, 64)
    with torch.inference_mode():
        plain = model(x)
        fused = fusion.fuse(model, torch.float32)
        assert any(isinstance(m, fusion.FusedResBlock) for m in fused.modules())
        weights = {t.data_ptr() for t in model.parameters()}
        used = [m.weight for m in fused.modules() if isinstance(m, fusion.FusedConv)] + list(fused.parameters())
        assert all(t.data_ptr() in weights for t in used)  # fp32: the model's own tensors, no second copy
        for a, b in zip(plain, fused(x), strict=True):
            assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(x)
        half = fusion.fuse(model, torch.bfloat16)
        assert all(t.dtype == torch.float32 for t in model.parameters())  # its own copy
        for a, b in zip(autocast, half(x.bfloat16()), strict=True):
            assert b.dtype == torch.bfloat16
            assert (a.float() - b.float()).abs().max() < 0.05  # bf16 rounding, in either order
    with pytest.raises(ValueError, match="fp32 or bf16"):
        fusion.fuse(model, torch.float16)


def test_the_deblurrer_runs_fused_on_the_cpu_and_plain_without_onednn(monkeypatch):
    img = photo(48, 64)
    torch.manual_seed(0)
    model = MIMOUNet(2, 16).eval()
    fused = Deblurrer(model, device="cpu", precision="fp32", tile=0)
    got = fused(img).image
    assert torch.float32 in fused._fused  # the fused copy ran
    monkeypatch.setattr(fusion, "available", lambda: False)
    plain = Deblurrer(model, device="cpu", precision="fp32", tile=0)
    expected = plain(img).image
    assert not plain._fused
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # rounding of the last bit at most
    wrapped = Deblurrer(SmallMemory(10**6), device="cpu", precision="fp32", tile=0)
    wrapped(img)
    assert not wrapped._fused  # a module that is not one of the networks runs as it is


def test_an_overflow_still_shows_as_nan():
    """oneDNN's fused ReLU would turn NaN into 0 and hide it: the ReLUs stay torch's."""
    torch.manual_seed(0)
    model = MIMOUNet(1).eval()
    with torch.no_grad():
        next(model.parameters()).fill_(3e38)  # finite weights whose activations overflow
    with torch.inference_mode():
        outs = fusion.fuse(model, torch.float32)(torch.rand(1, 3, 24, 28))
    assert not all(torch.isfinite(o).all() for o in outs)
