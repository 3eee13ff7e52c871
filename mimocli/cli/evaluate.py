"""`mimo eval DIR`: PSNR and SSIM on blurry/sharp pairs, per image and on average."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.markup import escape
from rich.progress import MofNCompleteColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mimocli.atomic import write_bytes_atomic, write_failed
from mimocli.errors import ImageError, OutputError
from mimocli.settings import ClusterSettings, RunSettings

if TYPE_CHECKING:
    from mimocli.evaluate import EvalRecord, EvalSummary

from . import options
from .console import app, err, fail_on_error, out, print_table, progress_bar, report, warnings_to_stderr
from .deblur import make_cluster, make_deblurrer

CSV_FIELDS = ("name", "width", "height", "psnr", "ssim", "blur_psnr", "blur_ssim", "seconds")


def csv_text(records: list[EvalRecord], summary: EvalSummary) -> str:
    """One row per image, then a 'mean' row."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in records:
        writer.writerow(
            [r.name, r.width, r.height, f"{r.psnr:.4f}", f"{r.ssim:.6f}", f"{r.blur_psnr:.4f}", f"{r.blur_ssim:.6f}"]
            + [f"{r.seconds:.3f}"]
        )
    s = summary
    writer.writerow(["mean", "", "", f"{s.psnr:.4f}", f"{s.ssim:.6f}", f"{s.blur_psnr:.4f}", f"{s.blur_ssim:.6f}", ""])
    return buf.getvalue()


@app.command("eval")
@options.run_options(
    precision=typer.Option(
        "fp32",
        "--precision",
        "-p",
        callback=options.parse_precision,
        help="fp32 by default, as the paper measured; auto, bf16 or fp16 to see what they cost.",
    ),
    omit=("compile", "tile_overlap", "batch"),
)
@options.cluster_options
def eval_command(
    data: Path = typer.Argument(
        ..., help="Folder of pairs: SEQ/blur/*.png with SEQ/sharp/*.png (GoPro), or blur/ and sharp/."
    ),
    variant: str | None = options.VARIANT,
    weights: str | None = options.WEIGHTS,
    cache_dir: Path | None = options.CACHE_DIR,
    run: RunSettings = RunSettings(),  # noqa: B008  (the run options take its place)
    cluster: ClusterSettings | None = None,  # --ray and its options take its place
    csv_path: Path | None = typer.Option(None, "--csv", help="Also write the per-image scores to this CSV file."),
    as_json: bool = typer.Option(False, "--json", help="Print per-image scores and means as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or warnings."),
) -> None:
    """PSNR and SSIM on blurry/sharp pairs (GoPro layout), per image and on average.

    Computed as the paper does: the output clamped and rounded to 8 bits. The blurry inputs'
    scores are shown for comparison.
    """
    from mimocli.evaluate import EvalSummary, evaluate, find_pairs  # torch, OpenCV: when it runs

    with fail_on_error():
        pairs = find_pairs(data)
        if csv_path is not None and csv_path.is_dir():
            raise OutputError(f"{csv_path}: is a folder", "give --csv a file name such as scores.csv")
    remote = None
    if cluster is None:
        deblurrer, loaded = make_deblurrer(variant, weights, cache_dir, run, quiet)
        engine = {**deblurrer.report(), "model_blocks": deblurrer.model.num_res}
    else:
        remote = make_cluster(cluster, variant, weights, cache_dir, run, quiet)
        loaded = remote.loaded
        engine = {**remote.settled.report(), "precision_reason": remote.reason, "model_blocks": loaded.model.num_res}
    records: list[EvalRecord] = []
    failed = 0
    with warnings_to_stderr(quiet):
        progress = progress_bar(MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), quiet=quiet)
        with progress:
            task = progress.add_task("[bold]eval", total=len(pairs), unit="pair")
            if remote is None:
                items = evaluate(pairs, deblurrer, lambda done, total: progress.update(task, completed=done))
            else:
                items = remote.pairs(pairs, lambda done, total: progress.update(task, completed=done))
            try:
                for item in items:
                    if isinstance(item, ImageError):
                        failed += 1
                        report(item)
                    else:
                        records.append(item)
            finally:
                if remote is not None:
                    remote.close()
    summary = EvalSummary.of(records)
    if csv_path is not None:
        with fail_on_error():
            try:
                write_bytes_atomic(csv_path, csv_text(records, summary).encode())
            except OSError as e:
                raise write_failed(csv_path, e) from None
    if as_json:
        payload = {
            "data": str(data),
            "settings": engine,
            "weights": loaded.to_dict(),
            "images": [r.to_dict() for r in records],
            "mean": summary.to_dict(),
            "failed": failed,
        }
        out.print(json.dumps(payload), markup=False, highlight=False)
    else:
        print_table(_table(records, summary, data))
    if failed:
        err.print(f"{failed} of {len(pairs)} pair(s) could not be evaluated")
        raise typer.Exit(1)


def _table(records: list[EvalRecord], summary: EvalSummary, data: Path) -> Table:
    table = Table(title=f"mimo eval {escape(str(data))}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("image")
    for name in ("PSNR dB", "SSIM", "blurry PSNR", "blurry SSIM", "gain dB", "seconds"):
        table.add_column(name, justify="right")
    for r in records:
        table.add_row(
            escape(r.name),
            f"{r.psnr:.2f}",
            f"{r.ssim:.4f}",
            f"{r.blur_psnr:.2f}",
            f"{r.blur_ssim:.4f}",
            f"{r.psnr - r.blur_psnr:+.2f}",
            f"{r.seconds:.2f}",
        )
    s = summary
    table.add_section()
    table.add_row(
        f"mean of {s.count}",
        f"{s.psnr:.2f}",
        f"{s.ssim:.4f}",
        f"{s.blur_psnr:.2f}",
        f"{s.blur_ssim:.4f}",
        f"{s.psnr - s.blur_psnr:+.2f}",
        "",
        style="bold",
    )
    return table
