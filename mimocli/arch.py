"""MIMO-UNet, the multi-input multi-output U-Net for single-image deblurring.

Cho, Ji, Hong, Jung, Ko: "Rethinking Coarse-to-Fine Approach in Single Image Deblurring",
ICCV 2021, https://arxiv.org/abs/2108.05054.

Attribute names follow the authors' code because they are the state-dict keys of the published
checkpoints. This module imports torch and nothing of ours.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 (the usual alias)
from torch import nn


class BasicConv(nn.Module):
    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        stride: int = 1,
        relu: bool = True,
        transpose: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module]
        if transpose:
            padding = kernel_size // 2 - 1
            layers = [nn.ConvTranspose2d(in_channel, out_channel, kernel_size, stride, padding)]
        else:
            padding = kernel_size // 2
            layers = [nn.Conv2d(in_channel, out_channel, kernel_size, stride, padding)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            BasicConv(channels, channels, 3, relu=True),
            BasicConv(channels, channels, 3, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x


class EBlock(nn.Module):
    def __init__(self, channels: int, num_res: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[ResBlock(channels) for _ in range(num_res)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


DBlock = EBlock  # same structure and keys; two names as in the paper


class AFF(nn.Module):
    """Asymmetric feature fusion of the three encoder scales."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            BasicConv(in_channel, out_channel, 1, relu=True),
            BasicConv(out_channel, out_channel, 3, relu=False),
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x4: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x1, x2, x4], dim=1))


class SCM(nn.Module):
    """Shallow convolutional module: features of the image at 1/2 or 1/4 scale."""

    def __init__(self, out_plane: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            BasicConv(3, out_plane // 4, 3, relu=True),
            BasicConv(out_plane // 4, out_plane // 2, 1, relu=True),
            BasicConv(out_plane // 2, out_plane // 2, 3, relu=True),
            BasicConv(out_plane // 2, out_plane - 3, 1, relu=True),
        )
        self.conv = BasicConv(out_plane, out_plane, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, self.main(x)], dim=1))


class FAM(nn.Module):
    """Feature attention: x1 + merge(x1 * x2)."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.merge = BasicConv(channel, channel, 3, relu=False)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return x1 + self.merge(x1 * x2)


def _down(x: torch.Tensor) -> torch.Tensor:
    # Nearest-neighbour halving keeps the even rows and columns, as upstream's default interpolate.
    return F.interpolate(x, scale_factor=0.5)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2)


class MIMOUNet(nn.Module):
    """MIMO-UNet with ``num_res`` residual blocks per level (8: MIMO-UNet, 20: MIMO-UNet+).

    ``ensemble``: the geometric self-ensemble of MIMO-UNet++, the mean of the outputs for the 8
    flips and rotations of the input (8x the work). A plain attribute, not part of the weights.
    """

    output_scales = (4, 2, 1)  # the outputs' sizes as divisors of the input's, coarse to fine
    output_names = (0.25, 0.5)  # the outputs before the full-size image, by scale

    def __init__(self, num_res: int = 8, base_channel: int = 32, ensemble: bool = False) -> None:
        super().__init__()
        c = base_channel
        self.num_res = num_res
        self.base_channel = base_channel
        self.ensemble = ensemble
        self.Encoder = nn.ModuleList([EBlock(c, num_res), EBlock(c * 2, num_res), EBlock(c * 4, num_res)])
        self.feat_extract = nn.ModuleList(
            [
                BasicConv(3, c, 3, relu=True, stride=1),
                BasicConv(c, c * 2, 3, relu=True, stride=2),
                BasicConv(c * 2, c * 4, 3, relu=True, stride=2),
                BasicConv(c * 4, c * 2, 4, relu=True, stride=2, transpose=True),
                BasicConv(c * 2, c, 4, relu=True, stride=2, transpose=True),
                BasicConv(c, 3, 3, relu=False, stride=1),
            ]
        )
        self.Decoder = nn.ModuleList([DBlock(c * 4, num_res), DBlock(c * 2, num_res), DBlock(c, num_res)])
        self.Convs = nn.ModuleList([BasicConv(c * 4, c * 2, 1, relu=True), BasicConv(c * 2, c, 1, relu=True)])
        self.ConvsOut = nn.ModuleList([BasicConv(c * 4, 3, 3, relu=False), BasicConv(c * 2, 3, 3, relu=False)])
        self.AFFs = nn.ModuleList([AFF(c * 7, c), AFF(c * 7, c * 2)])
        self.FAM1 = FAM(c * 4)
        self.SCM1 = SCM(c * 4)
        self.FAM2 = FAM(c * 2)
        self.SCM2 = SCM(c * 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B,3,H,W) in [0,1], H and W multiples of 4 -> [1/4, 1/2, full] images, unclamped."""
        return self_ensemble(self._forward, x) if self.ensemble else self._forward(x)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x_2 = _down(x)
        x_4 = _down(x_2)
        z2 = self.SCM2(x_2)
        z4 = self.SCM1(x_4)

        res1 = self.Encoder[0](self.feat_extract[0](x))
        res2 = self.Encoder[1](self.FAM2(self.feat_extract[1](res1), z2))
        z = self.Encoder[2](self.FAM1(self.feat_extract[2](res2), z4))

        z12 = _down(res1)
        z21 = _up(res2)
        z42 = _up(z)
        z41 = _up(z42)
        res2 = self.AFFs[1](z12, res2, z42)
        res1 = self.AFFs[0](res1, z21, z41)

        z = self.Decoder[0](z)
        out_4 = self.ConvsOut[0](z) + x_4
        z = self.feat_extract[3](z)

        z = self.Convs[0](torch.cat([z, res2], dim=1))
        z = self.Decoder[1](z)
        out_2 = self.ConvsOut[1](z) + x_2
        z = self.feat_extract[4](z)

        z = self.Convs[1](torch.cat([z, res1], dim=1))
        z = self.Decoder[2](z)
        out_1 = self.feat_extract[5](z) + x
        return [out_4, out_2, out_1]


def self_ensemble(net: Callable[[torch.Tensor], list[torch.Tensor]], x: torch.Tensor) -> list[torch.Tensor]:
    """The mean of ``net``'s outputs over the 8 flips and rotations of ``x``, each turned back."""
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    acc: list[torch.Tensor] = []
    for k, flip in DIHEDRAL:
        outs = net(dihedral(x, k, flip).contiguous(memory_format=layout))
        outs = [dihedral_inverse(o.float(), k, flip) for o in outs]
        acc = outs if not acc else [a + o for a, o in zip(acc, outs, strict=True)]
    return [a / len(DIHEDRAL) for a in acc]


# The eight symmetries of the square (4 rotations x optional flip), each with its inverse.
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def dihedral_inverse(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, -k, dims=(-2, -1))
