"""`mimo env`: what a bug report needs, in one command."""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

import typer

from mimocli import __version__

from .console import app, out

ENCODERS = ("libx264", "libx265", "libvpx-vp9", "libvpx", "libsvtav1", "libaom-av1", "ffv1", "prores_ks")
DECODERS = ("h264", "hevc", "vp9", "vp8", "av1", "libdav1d", "libvpx-vp9", "prores", "ffv1")


def environment() -> dict[str, Any]:
    """mimocli, Python, torch and its build, PyAV/FFmpeg, devices and memory, and the weights cache."""
    import av
    import torch

    from mimocli.device import cpu_has_native_bf16
    from mimocli.weights import cache_dir, cache_listing

    info: dict[str, Any] = {
        "mimocli": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "torch": {
            "version": torch.__version__,
            "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # mimo's main sets PASSIVE unless set
            "cuda_build": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
            "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
            "cpu_native_bf16": cpu_has_native_bf16(),
            "mkldnn": torch.backends.mkldnn.is_available(),
        },
        "gpus": [
            {
                "name": torch.cuda.get_device_name(i),
                "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
                "bf16": torch.cuda.is_bf16_supported(),
            }
            for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)
        ],
        "openvino": _openvino(),
        "pyav": av.__version__,
        "ffmpeg": {name: ".".join(map(str, v)) for name, v in av.library_versions.items()},
        "encoders": {name: name in av.codecs_available for name in ENCODERS},
        "decoders": {name: name in av.codecs_available for name in DECODERS},
        "cache": str(cache_dir()),
        "weights": [
            {k: row[k] for k in ("name", "path", "size", "sha256")} for row in cache_listing() if row["cached"]
        ],
    }
    return info


def _openvino() -> dict[str, Any] | None:
    """OpenVINO's version and whether its CPU plugin runs bf16 here (--backend), or None where it
    is not installed (or MIMO_OPENVINO=0 turns it off)."""
    from mimocli import openvino_backend

    if not openvino_backend.available():
        return None
    return {"version": openvino_backend.version(), "cpu_bf16": openvino_backend.has_bf16()}


def _memory_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


@app.command("env")
def env(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines.")) -> None:
    """Print what a bug report needs: versions, torch build, devices, FFmpeg encoders, cached weights."""
    info = environment()
    if as_json:
        out.print(json.dumps(info, indent=1), markup=False, highlight=False)
        return
    t = info["torch"]
    lines = [
        f"mimocli {info['mimocli']}, Python {info['python']}, {info['platform']}",
        f"CPU: {info['cpu']}, {info['cpu_count']} logical cores, {info['memory_gb']} GB memory",
        f"torch {t['version']} ({'CUDA ' + t['cuda_build'] if t['cuda_build'] else 'CPU build'}), "
        f"{t['threads']} threads, native bf16 on CPU: {'yes' if t['cpu_native_bf16'] else 'no'}",
        "devices: cpu"
        + "".join(f", cuda:{i} {g['name']} ({g['memory_gb']} GB)" for i, g in enumerate(info["gpus"]))
        + (", mps" if t["mps_available"] else ""),
        "OpenVINO: "
        + (
            f"{info['openvino']['version']}, bf16 on CPU: {'yes' if info['openvino']['cpu_bf16'] else 'no'}"
            if info["openvino"]
            else 'not installed (pip install "mimocli[openvino]" for --backend openvino)'
        ),
        f"PyAV {info['pyav']}, FFmpeg libavcodec {info['ffmpeg'].get('libavcodec', '?')}",
        "encoders: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["encoders"].items()),
        f"weights cache: {info['cache']}",
    ]
    lines += [f"  {w['name']}: {w['path']} ({w['size']:,} bytes, sha256 {w['sha256']})" for w in info["weights"]]
    for line in lines:
        out.print(line, markup=False, highlight=False)
