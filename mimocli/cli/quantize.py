"""`mimo quantize [VARIANT]`: an int8 model for the CPU, calibrated once, with what it costs shown."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import typer

from mimocli.errors import ImageError

from . import options
from .console import app, err, fail_on_error, out, warnings_to_stderr
from .deblur import load_model


@app.command()
def quantize(
    variant: str | None = typer.Argument(
        None, callback=options.parse_variant, help="Variant (default: mimo-unet-plus)."
    ),
    weights: str | None = options.WEIGHTS,
    cache_dir: Path | None = options.CACHE_DIR,
    calibrate: Path | None = typer.Option(
        None,
        "--calibrate",
        help="Folder of your own photos: every other one calibrates, the rest measure the cost. "
        "Default: the image shipped for it.",
    ),
    auto: bool = typer.Option(
        False, "--auto", help="Let --precision auto use int8 for these weights where it measures faster here."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary or warnings."),
) -> None:
    """Make the int8 model that --precision int8 uses (CPU), and print how far its output is from
    the float model's (PSNR) on images it was not calibrated on."""
    import numpy as np
    import torch

    from mimocli import openvino_backend
    from mimocli.engine import Deblurrer
    from mimocli.images import is_image_path
    from mimocli.quantize import BUNDLED_CALIBRATION, cache_folder, calibration_images, quantized_for

    with fail_on_error():
        if calibrate is not None:
            if not calibrate.is_dir():
                raise ImageError(f"{calibrate}: not a folder", "pass a folder of photos to --calibrate")
            files = sorted(p for p in calibrate.iterdir() if is_image_path(p))
            if len(files) < 2:
                raise ImageError(f"{calibrate}: holds {len(files)} image(s)", "pass a folder of two photos or more")
        else:
            files = [BUNDLED_CALIBRATION]
        calib, held = (files[::2], files[1::2]) if len(files) > 1 else (files, files)
    loaded = load_model(variant, weights, cache_dir, quiet)
    with fail_on_error(), warnings_to_stderr(quiet):
        images, names = calibration_images(calib)
        t0 = time.perf_counter()
        int8, said = quantized_for(loaded.model, images, names, cache_folder(cache_dir), auto=auto)
        seconds = time.perf_counter() - t0
        test, test_names = calibration_images(held)
        exact = Deblurrer(loaded.model, device="cpu", precision="fp32", backend="torch")
        fast = Deblurrer(loaded.model, device="cpu", precision="int8", backend="torch", int8=int8)  # just made

        floats = [exact(img).image.astype(np.float64) for img in test]  # once, for each int8 network

        def psnr_vs_float(d: Deblurrer) -> list[tuple[str, float]]:
            scores = []
            for name, img, a in zip(test_names, test, floats, strict=True):
                b = d(img).image.astype(np.float64)
                peak = 65535.0 if img.dtype == np.uint16 else 255.0
                mse = float(np.mean((a - b) ** 2))
                scores.append((name, math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)))
            return scores

        scores = psnr_vs_float(fast)
        # Where NNCF is installed beside OpenVINO, its int8 network too, from the same photos: the
        # one --precision int8 uses where it measures faster (--backend auto) or is asked for.
        ov: dict[str, object] | None = None
        if openvino_backend.can_quantize() and openvino_backend.supports(loaded.model):
            t0 = time.perf_counter()
            folder = openvino_backend.cache_folder(cache_dir)
            ov_int8, ov_said = openvino_backend.quantized_for(loaded.model, images, names, folder, auto=auto)
            ov_seconds = time.perf_counter() - t0
            on_ov = Deblurrer(loaded.model, device="cpu", precision="int8", backend="openvino", openvino=ov_int8)
            ov_scores = psnr_vs_float(on_ov)
            ov = {
                "seconds": round(ov_seconds, 1),
                "openvino": openvino_backend.version(),
                "psnr_vs_float": {n: round(p, 2) for n, p in ov_scores},
                "note": ov_said,
            }
    record = {
        "weights": loaded.to_dict(),
        "calibrated_on": names,
        "seconds": round(seconds, 1),
        "torch": torch.__version__,
        "psnr_vs_float": {n: round(p, 2) for n, p in scores},
        "note": said,
        "auto": auto,
        "openvino": ov,
    }
    if as_json:
        out.print(json.dumps(record), markup=False, highlight=False)
        return
    same = " (the calibration image: pass --calibrate with your own photos for a fair figure)" if not calibrate else ""
    for name, psnr in scores:
        out.print(f"{name}: int8 output {psnr:.2f} dB PSNR from the float output{same}", markup=False)
    if ov is not None:
        for name, psnr in ov["psnr_vs_float"].items():  # type: ignore[attr-defined]
            out.print(f"{name}: OpenVINO's int8 output {psnr:.2f} dB PSNR from the float output{same}", markup=False)
    if not quiet:
        err.print(f"{loaded.variant.name}: {said}, in {seconds:.1f} s; --precision int8 now uses it", markup=False)
        if ov is not None:
            err.print(
                f"{loaded.variant.name}: {ov['note']}, in {ov['seconds']:.1f} s; --precision int8 uses it where it "
                "measures faster (or with --backend openvino)",
                markup=False,
            )
