"""MIMO-UNet (and XYDeblur) on the CPU with oneDNN's fused convolutions: a residual block's add
done by its second convolution as it writes its output (a oneDNN post-op), bias included,
instead of as a pass of its own over memory; the whole network in the run's precision, so bf16
needs no autocast casts on every call. Eager: nothing is compiled.

The ReLUs are not fused, on purpose: oneDNN's ReLU post-op turns NaN into 0, which would let a
network whose activations overflow write a plausible image where the engine must fail
(NotFiniteError); torch's ReLU keeps NaN. Fused as it is, MIMO-UNet ran 7% faster in fp32 and
15% in bf16 at 640x360 (2 cores, Xeon with AMX; medians of 5), with the same outputs up to
rounding; fusing the ReLUs too would have made bf16 46% faster. Uses the operator that inductor's
CPU fusion passes use (torch.ops.mkldnn._convolution_pointwise); ``available()`` says whether this
torch has it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .arch import BasicConv, MIMOUNet, ResBlock

DTYPES = (torch.float32, torch.bfloat16)


def available() -> bool:
    """Whether this torch build has oneDNN and its fused convolution operators."""
    return bool(torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def fusable(model: nn.Module) -> bool:
    """Whether ``model`` is one of the networks this module knows (MIMO-UNet, XYDeblur); any
    other module, even one holding their blocks, runs as it is."""
    from .xydeblur import XYDeblur

    return isinstance(model, (MIMOUNet, XYDeblur))


class FusedConv(nn.Module):
    """A BasicConv's Conv2d as one oneDNN convolution, then its ReLU; ``add``: a tensor added to
    the convolution's output (a residual) inside the convolution."""

    def __init__(self, block: BasicConv, dtype: torch.dtype) -> None:
        super().__init__()
        conv = block.main[0]
        assert isinstance(conv, nn.Conv2d)
        self.relu = any(isinstance(m, nn.ReLU) for m in block.main)
        self.padding, self.stride = list(conv.padding), list(conv.stride)  # type: ignore[arg-type]
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.weight = conv.weight.detach().to(dtype)
        self.bias = None if conv.bias is None else conv.bias.detach().to(dtype)

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        op = torch.ops.mkldnn._convolution_pointwise
        shape = (self.padding, self.stride, self.dilation, self.groups)
        if add is None:
            y = op(x, self.weight, self.bias, *shape, "none", [], "")
        else:
            y = op.binary(x, add, self.weight, self.bias, *shape, "add", 1.0, None, [], "")
        # oneDNN's ReLU post-op turns NaN into 0, which would hide an overflow that the engine
        # must report (torch's ReLU keeps NaN): the ReLU runs apart, in place.
        return y.relu_() if self.relu else y  # type: ignore[no-any-return]


class FusedResBlock(nn.Module):
    """conv-ReLU-conv plus the input: the add done by the second convolution."""

    def __init__(self, block: ResBlock, dtype: torch.dtype) -> None:
        super().__init__()
        first, second = block.main
        assert isinstance(first, BasicConv) and isinstance(second, BasicConv)
        self.first, self.second = FusedConv(first, dtype), FusedConv(second, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x), add=x)  # type: ignore[no-any-return]


def fuse(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` (on the CPU, in eval mode) for inference in ``dtype`` (fp32 or bf16):
    every ResBlock and every BasicConv around a Conv2d replaced by its fused form; the rest
    (transposed convolutions, the concatenations, resizes and the other adds) as it was, cast to
    ``dtype``. Its input must be of ``dtype`` too; its outputs are. Raises ValueError for
    another dtype."""
    if dtype not in DTYPES:
        raise ValueError(f"fused convolutions run in fp32 or bf16, not {dtype}")
    # In the model's own dtype the copy shares its tensors (a second MIMO-UNet+ in fp32 would be
    # 64 MB more); in another one .to() makes new ones, so nothing may be shared.
    tensors = (*model.parameters(), *model.buffers())
    shared = {id(t): t for t in tensors} if all(t.dtype == dtype for t in tensors) else {}
    fused = copy.deepcopy(model, shared).to(dtype).eval()
    for kind, replacement in ((ResBlock, FusedResBlock), (BasicConv, FusedConv)):
        for name, module in list(fused.named_modules()):
            if type(module) is not kind or not name:
                continue
            if kind is BasicConv and not isinstance(module.main[0], nn.Conv2d):
                continue  # a transposed convolution: as it is
            parent_name, _, child = name.rpartition(".")
            setattr(fused.get_submodule(parent_name), child, replacement(module, dtype))  # type: ignore[arg-type]
    return fused
