from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mimocli.arch import MIMOUNet
from mimocli.errors import WeightsError
from mimocli.registry import detect_variant, get_variant, num_res_of


@pytest.mark.shared
def test_parity_with_upstream_outputs(shared):
    ref = shared / "reference"
    model = MIMOUNet(8).eval()
    weights = {k: v.float() for k, v in load_file(ref / "mimo_unet_random.safetensors").items()}
    model.load_state_dict(weights, strict=True)
    io = load_file(ref / "mimo_unet_random_io.safetensors")
    with torch.inference_mode():
        for name in ("a", "b"):
            outs = model(io[f"{name}.input"])
            assert len(outs) == 3
            for i, out in enumerate(outs):
                expected = io[f"{name}.output.{i}"]
                assert out.shape == expected.shape
                assert (out - expected).abs().max().item() < 1e-4, (name, i)


@pytest.mark.shared
@pytest.mark.parametrize("variant", ["mimo-unet", "mimo-unet-plus"])
def test_state_dict_matches_manifest(shared, variant):
    manifest = json.loads((shared / "reference" / "state_dict_manifest.json").read_text())[variant]
    sd = MIMOUNet(get_variant(variant).num_res).state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == manifest
    assert detect_variant(manifest).name == variant


def test_parameter_counts():
    assert sum(p.numel() for p in MIMOUNet(8).parameters()) == 6_807_171
    assert sum(p.numel() for p in MIMOUNet(20).parameters()) == 16_107_651


def test_variants_and_aliases():
    assert get_variant("base").num_res == 8
    assert get_variant("PLUS").name == "mimo-unet-plus"
    assert get_variant("mimo-unet-plus-plus").ensemble
    assert get_variant("mimo-unet-plus-plus").weights_key == "mimo-unet-plus"
    with pytest.raises(WeightsError, match="unknown variant"):
        get_variant("resnet")


def test_detects_custom_depth_and_rejects_foreign_dicts():
    sd = MIMOUNet(3).state_dict()
    assert num_res_of({f"module.{k}": v for k, v in sd.items()}) == 3
    assert detect_variant(sd).num_res == 3
    with pytest.raises(WeightsError, match="not a MIMO-UNet"):
        detect_variant({"conv.weight": torch.zeros(1)})


def test_output_shapes_are_three_scales():
    with torch.inference_mode():
        outs = MIMOUNet(1)(torch.rand(2, 3, 40, 56))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 10, 14), (2, 3, 20, 28), (2, 3, 40, 56)]
