from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mimocli.arch import MIMOUNet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# The suite runs as on a CPU without native bf16, whatever CPU runs it: --precision auto would
# otherwise time fp32 against bf16 on CPUs that have it, and decide by the machine's load. Set in
# the environment so that every process the tests start (Ray's workers too) sees the same; tests
# of the bf16 path fake the CPU feature themselves, both ways.
os.environ["MIMO_CPU_BF16"] = "0"
# Likewise with OpenVINO installed (the test extra has it), --backend auto would time torch
# against OpenVINO: the suite runs as without it; its tests (test_openvino.py) let it through.
os.environ["MIMO_OPENVINO"] = "0"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Seed every RNG and keep every cache and setting of ours inside tmp_path."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_ASSETS_CACHE", raising=False)
    monkeypatch.delenv("MIMO_CACHE_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("MIMO_GDRIVE_URL", "http://127.0.0.1:9/unreachable")  # never the real Drive
    # huggingface-hub reads HF_HUB_OFFLINE once, at import: a test that imported it while
    # offline must not leave the hub offline for the tests after it.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    # `mimo ... --threads N` run in this process sets torch's process-wide thread count: give it back.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared() -> Path:
    if not (SHARED / "reference" / "ARCHITECTURE.md").exists():
        pytest.skip("../shared is not beside this checkout")
    return SHARED


def interrupt_when(proc: subprocess.Popen[str], ready: Callable[[], bool], seconds: float = 120) -> str:
    """Ctrl-C ``proc`` (SIGINT, as a terminal sends it) once ``ready()``; its stderr."""
    deadline = time.monotonic() + seconds
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"not ready in {seconds} s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return stderr


def digest(path: Path) -> str:
    """sha256 of a file: compare files by this, so that a failure prints two short lines, not a
    diff of their bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_model(num_res: int = 1, seed: int = 0) -> MIMOUNet:
    torch.manual_seed(seed)
    return MIMOUNet(num_res).eval()


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model().state_dict().items()}, path)
    return path


def photo(h: int = 64, w: int = 96, channels: int = 3, dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like test image (gradients and a few edges) of the given layout."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = [0.5 + 0.4 * np.sin(6 * xx + 3 * yy + k) for k in range(max(channels, 1))]
    img = np.stack(base, axis=-1) + 0.02 * rng.standard_normal((h, w, max(channels, 1)))
    img[h // 3 : h // 2, w // 4 : w // 2] = 0.9
    maxv = np.iinfo(dtype).max
    arr = np.clip(img, 0, 1) * maxv
    return np.rint(arr).astype(dtype)


class Probe(nn.Module):
    """tiny_model() that hands every input it gets to ``look`` first (a function: the Deblurrer's
    copy of this model calls the same one)."""

    def __init__(self, look: Callable[[torch.Tensor], object]) -> None:
        super().__init__()
        self.net, self.look = tiny_model(), look

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.look(x)
        return self.net(x)  # type: ignore[no-any-return]


class SmallMemory(nn.Module):
    """Stands in for a GPU with little memory: inputs over ``limit`` pixels raise CUDA's OOM."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.sizes = tiny_model(), limit, []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.sizes.append(tuple(x.shape[-2:]))
        if x.shape[-1] * x.shape[-2] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)  # type: ignore[no-any-return]


def compiler_failing_with(monkeypatch: pytest.MonkeyPatch, message: str) -> None:
    """torch.compile replaced by one whose compiled network raises RuntimeError(message)."""

    def compile(model: nn.Module, **kwargs: object) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        def run(x: torch.Tensor) -> list[torch.Tensor]:
            raise RuntimeError(message)

        return run

    monkeypatch.setattr(torch, "compile", compile)
