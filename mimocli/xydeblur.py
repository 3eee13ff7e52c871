"""XYDeblur: one encoder and one decoder run twice, the second time on features turned by 90
degrees, so that each pass learns one direction of the blur.

Ji, Lee, Kim, Hong, Jung, Ko: "XYDeblur: Divide and Conquer for Single Image Deblurring",
CVPR 2022 (https://github.com/Seowon-Ji/XYDeblur). From the same group as MIMO-UNet, with the
same building blocks (mimocli.arch's BasicConv and ResBlock, same state-dict layout).

Attribute names follow the authors' code because they are the state-dict keys of the published
checkpoint. This module imports torch and mimocli.arch only.
"""

from __future__ import annotations

import torch
from torch import nn

from .arch import BasicConv, ResBlock, self_ensemble


@torch.fx.wrap  # a leaf for FX (the int8 model): its layout test is no graph of its own
def _turn(f: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``f`` turned 90 degrees counter-clockwise (upstream's swap of H and W, then reversal of the
    new H), copied into ``like``'s memory layout: turned, it is a strided view, which the
    convolutions would reorder themselves (channels-last bf16 at 640x360: 0.41 s a frame instead
    of 0.48 s). The values are those of torch.rot90."""
    layout = torch.channels_last if like.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return torch.rot90(f, 1, dims=(2, 3)).contiguous(memory_format=layout)


class EBlock(nn.Module):
    """A convolution (stride 1 for the first level, else 2) then ``num_res`` residual blocks."""

    def __init__(self, in_channel: int, out_channel: int, num_res: int, first: bool) -> None:
        super().__init__()
        stem = BasicConv(in_channel, out_channel, 3, stride=1 if first else 2, relu=True)
        self.layers = nn.Sequential(stem, *[ResBlock(out_channel) for _ in range(num_res)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DBlock(nn.Module):
    """``num_res`` residual blocks, then (but for the last level) a 4x4 transposed convolution
    that doubles the size and halves the channels."""

    def __init__(self, channel: int, num_res: int, last: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [ResBlock(channel) for _ in range(num_res)]
        if not last:
            layers.append(BasicConv(channel, channel // 2, 4, stride=2, relu=True, transpose=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class XYDeblur(nn.Module):
    """XYDeblur with ``num_res`` residual blocks per block (6 in the paper) and ``base_channel``
    channels at full scale (32). 4.9 M parameters, about 1.93 TFLOP per 1280x720 frame.

    ``ensemble``: the mean over the 8 flips and rotations of the input, as for MIMO-UNet++ (a
    plain attribute, not part of the weights).
    """

    output_scales = (1, 1, 1)  # every output is full size: two directional residuals, then the image
    output_names = ("residual-x", "residual-y")  # what the outputs before the image are
    signed_outputs = True  # those are residuals in about [-1, 1], not images

    def __init__(self, num_res: int = 6, base_channel: int = 32, ensemble: bool = False) -> None:
        super().__init__()
        c = base_channel
        self.num_res, self.base_channel, self.ensemble = num_res, base_channel, ensemble
        self.Encoder1 = EBlock(3, c, num_res, first=True)
        self.Encoder2 = EBlock(c, c * 2, num_res, first=False)
        self.Encoder3 = EBlock(c * 2, c * 4, num_res, first=False)
        self.Convs1_1 = BasicConv(c * 4, c * 2, 1, relu=True)
        self.Convs1_2 = BasicConv(c * 2, c, 1, relu=True)
        self.Decoder1_1 = DBlock(c * 4, num_res, last=False)
        self.Decoder1_2 = DBlock(c * 2, num_res, last=False)
        self.Decoder1_3 = DBlock(c, num_res, last=True)
        self.Decoder1_4 = BasicConv(c, 3, 3, relu=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B,3,H,W) in [0,1], H and W multiples of 4 -> [residual along one axis, residual
        along the other, the image = x + both], each (B,3,H,W), unclamped."""
        return self_ensemble(self._forward, x) if self.ensemble else self._forward(x)

    def _decode(self, f3: torch.Tensor, f2: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        d = self.Convs1_1(torch.cat([self.Decoder1_1(f3), f2], dim=1))
        d = self.Convs1_2(torch.cat([self.Decoder1_2(d), f1], dim=1))
        return self.Decoder1_4(self.Decoder1_3(d))

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        e1 = self.Encoder1(x)
        e2 = self.Encoder2(e1)
        e3 = self.Encoder3(e2)
        out_0 = self._decode(e3, e2, e1)
        # The same decoder on the features turned 90 degrees counter-clockwise, turned back after.
        turned = self._decode(*(_turn(f, x) for f in (e3, e2, e1)))
        out_1 = torch.rot90(turned, -1, dims=(2, 3))
        return [out_0, out_1, (out_0 + out_1) + x]  # in this order: bit-exact with upstream
