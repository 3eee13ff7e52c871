"""The machine's convolution ceiling: what one 3x3 convolution of 64 channels on a 256x256 image
reaches here, in fp32, bf16 or int8, so that `mimo bench` can say how close a whole network comes
to the limit on any CPU or GPU rather than against figures from another machine."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

from .timing import best_time

CHANNELS, SIDE = 64, 256
WORK = 2 * CHANNELS * CHANNELS * 9 * SIDE * SIDE  # multiply-adds counted as two operations
REPEAT = 5


@functools.cache
def conv_ceiling(device: str, precision: str) -> float | None:
    """TFLOP/s (TOP/s for int8) of the convolution on ``device`` ("cpu", "cuda:0"...) in
    ``precision`` (fp32, bf16, fp16, int8); None where that precision does not run there."""
    dev = torch.device(device)
    torch.manual_seed(0)
    x = torch.rand(1, CHANNELS, SIDE, SIDE, device=dev).contiguous(memory_format=torch.channels_last)
    if precision == "int8":
        if dev.type != "cpu":
            return None
        with warnings.catch_warnings():  # torch says quantized tensors are moving to torchao
            warnings.simplefilter("ignore")
            conv = torch.ao.nn.quantized.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
            q = torch.quantize_per_tensor(x, 1 / 255, 0, torch.quint8)
        seconds = best_time(lambda: conv(q), REPEAT, dev)
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        if dev.type == "mps" and dtype == torch.bfloat16:
            return None
        float_conv = nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1).to(dev)
        float_conv.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

        def run() -> None:
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
                float_conv(x)

        seconds = best_time(run, REPEAT, dev)
    return WORK / seconds / 1e12
