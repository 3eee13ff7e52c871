"""mimocli's CPU paths beside ONNX Runtime and OpenVINO, same weights, same input, one process.

    pip install "mimocli[runtimes]"    # onnx, onnxruntime, openvino, nncf (for OpenVINO's int8)
    python benchmarks/runtimes.py [--variants base,plus,lite] [--sizes 640x360,1280x720] [--iters 5]

For each variant (random weights for MIMO-UNet and MIMO-UNet+: the cost is the published one's;
the bundled weights for lite) and size, times one whole frame (no tiles) through:

- eager fp32 NCHW: the upstream way, the baseline every ratio is against;
- mimocli's default path (`--backend auto`: torch, or OpenVINO where the openvino extra is installed
  and measures faster) with `--precision fp32`, `auto` (bf16 where the CPU has it natively) and
  `int8`; the torch path alone (`--backend torch`) in fp32 and bf16; and fp32 with `--compile`
  (inductor, weights frozen; its compile time is printed apart);
- ONNX Runtime (opset 17, all graph optimisations) in fp32 and static int8 (QDQ, per-channel
  weights, calibrated on the 256 px crops `mimo quantize` uses: calibrating on whole 720p frames
  keeps every activation of every sample and needed more than 24 GB);
- OpenVINO in f32, with the bf16 hint where the CPU has bf16, and int8 (NNCF post-training
  quantisation on the same crops) where nncf is installed.

Each runtime's rows are left out where it is not installed.

The paths are timed in rounds, each round calling every path once in turn (see interleaved), so
that the machine's changing load does not favour whichever path ran at a quiet moment.

Prints a markdown table: the median of --iters calls, the ratio to the baseline, the share of
this machine's convolution ceiling in that precision (mimocli.ceiling) and the PSNR of the
output against the baseline's (what each path gives up). Nothing here is imported by mimocli.
"""

from __future__ import annotations

import os

# As mimo's main sets it before torch is imported: torch's waiting threads sleep instead of
# spinning, which would otherwise slow whatever runs next on the same cores (OpenVINO's threads
# after a torch path: 5% at 640x360 in bf16).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mimocli.bench import random_model, tflop_per_frame
from mimocli.ceiling import conv_ceiling
from mimocli.device import cpu_has_native_bf16
from mimocli.engine import build_deblurrer
from mimocli.quantize import calibration_images, crops
from mimocli.registry import get_variant
from mimocli.settings import RunSettings
from mimocli.weights import load_weights

Run = Callable[[], np.ndarray]  # one whole frame through a path: its full-size output


def interleaved(runs: dict[str, Run], iters: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Each path's median over ``iters`` rounds, a round timing every path once in turn, so that
    a change in the machine's load falls on every path alike instead of on whichever ran then;
    and each path's output (from its first, untimed call: first-call allocations, oneDNN
    primitive creation and OpenVINO's first inference happen there)."""
    outputs = {label: np.asarray(run()) for label, run in runs.items()}
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(iters):
        for label, run in runs.items():
            t = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - t)
    return {label: statistics.median(t) for label, t in times.items()}, outputs


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def calibration() -> list[np.ndarray]:
    """The crops `mimo quantize` calibrates on (256 px, from the image shipped for it)."""
    images, _ = calibration_images(None)
    return [np.ascontiguousarray(c.numpy(), dtype=np.float32) for c in crops(images)[:8]]


def onnx_paths(
    model: torch.nn.Module, x: torch.Tensor, folder: Path, calib: list[np.ndarray]
) -> dict[str, tuple[Run, str]]:
    """ONNX Runtime and OpenVINO on the model exported once to ONNX: {path: (run, precision)}."""
    import warnings

    found: dict[str, tuple[Run, str]] = {}
    onnx_file = folder / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(  # any size: calibrated on 256 px crops, timed on the frame
            model,
            (x,),
            str(onnx_file),
            opset_version=17,
            input_names=["x"],
            dynamic_axes={"x": {2: "height", 3: "width"}},
            dynamo=False,
        )
    xn = x.numpy()
    threads = torch.get_num_threads()
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        ort = None
    if ort is not None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads

        def session(path: Path) -> Run:
            s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            return lambda: s.run(None, {"x": xn})[-1]

        found["ONNX Runtime fp32"] = (session(onnx_file), "fp32")

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter({"x": c} for c in calib)

            def get_next(self):  # type: ignore[no-untyped-def]
                return next(self.items, None)

        q_file = folder / "model.int8.onnx"
        quantize_static(
            str(onnx_file),
            str(q_file),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        found["ONNX Runtime int8 (static QDQ)"] = (session(q_file), "int8")
    try:
        import openvino as ov
    except ImportError:
        return found
    core = ov.Core()
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    hints = [("f32", "fp32")] + ([("bf16", "bf16")] if "BF16" in capabilities else [])
    static = core.read_model(str(onnx_file))
    static.reshape([1, 3, *x.shape[2:]])  # compiled for the frame's size, as a run would
    for hint, precision in hints:
        compiled = core.compile_model(
            static, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads}
        )
        found[f"OpenVINO {hint}"] = (lambda compiled=compiled: list(compiled([xn]).values())[-1], precision)
    try:
        import nncf
    except ImportError:
        return found
    quantized = nncf.quantize(core.read_model(str(onnx_file)), nncf.Dataset(calib))
    quantized.reshape([1, 3, *x.shape[2:]])
    compiled = core.compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": threads})
    found["OpenVINO int8 (NNCF)"] = (lambda: list(compiled([xn]).values())[-1], "int8")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="base,plus,lite")
    ap.add_argument("--sizes", default="640x360,1280x720")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="leave out mimocli --compile (its compile takes minutes)")
    args = ap.parse_args()
    threads = torch.get_num_threads()
    bf16 = cpu_has_native_bf16()
    print(f"torch {torch.__version__}, {threads} threads, native bf16: {bf16}, median of {args.iters}")
    print("| variant | size | path | time | vs eager | of the conv ceiling | PSNR dB vs eager fp32 |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in args.variants.split(","):
        v = get_variant(name)
        for size in args.sizes.split(","):
            width, height = (int(n) for n in size.split("x"))
            if v.name == "mimo-unet-lite":
                model = load_weights(name, "cpu").model.eval()
            else:
                model = random_model(v.num_res).eval()
            torch.manual_seed(0)
            x = torch.rand(1, 3, height, width)
            runs: dict[str, Run] = {"eager fp32 NCHW (upstream)": lambda model=model, x=x: model(x)[-1].numpy()}
            precisions = {"eager fp32 NCHW (upstream)": "fp32"}
            chosen = ["fp32", "fp32 --backend torch", "auto", "bf16 --backend torch", "int8"]
            if not cpu_has_native_bf16():
                chosen.remove("bf16 --backend torch")
            chosen += [] if args.no_compile else ["fp32 --compile"]
            for path in chosen:
                precision, compiled = path.split(" ")[0], path.endswith("--compile")
                backend = "torch" if path.endswith("--backend torch") else "auto"
                settings = RunSettings(device="cpu", precision=precision, tile=0, compile=compiled, backend=backend)
                started = time.perf_counter()
                d = build_deblurrer(copy.deepcopy(model), settings)
                with torch.inference_mode():
                    d.run_tensor(x)
                prepared = time.perf_counter() - started  # with --compile: the compile, on the first call
                label = f"mimocli --precision {path}"
                if backend == "auto":  # what the default path chose: the precision (auto's) and the backend
                    picked = [d.settled.precision] if precision == "auto" else []
                    label += f" ({', '.join([*picked, d.settled.backend])})"
                if compiled:
                    label += f" ({prepared:.0f} s to compile)"
                runs[label] = lambda d=d, x=x: d.run_tensor(x)[0][-1].numpy()
                precisions[label] = str(d.settled.precision)
            with tempfile.TemporaryDirectory() as folder:
                for label, (run, precision) in onnx_paths(model, x, Path(folder), calibration()).items():
                    runs[label], precisions[label] = run, precision
                with torch.inference_mode():
                    medians, outputs = interleaved(runs, args.iters)
            reference = outputs["eager fp32 NCHW (upstream)"]
            rows = [(label, medians[label], outputs[label], precisions[label]) for label in runs]
            work = tflop_per_frame(v, width, height)
            base = rows[0][1]
            for label, seconds, out, precision in rows:
                ceiling = conv_ceiling("cpu", precision if precision in ("fp32", "bf16", "int8") else "fp32")
                share = f"{work / seconds / ceiling:.0%} of {ceiling:.3f}" if ceiling else "-"
                quality = psnr(np.asarray(out), reference)
                print(
                    f"| {v.name} | {width}x{height} | {label} | {seconds:.2f} s | {base / seconds:.2f}x | "
                    f"{share} | {'=' if math.isinf(quality) else f'{quality:.1f}'} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
