"""The `mimo` command line. The only package that imports typer and rich; nothing imports it."""

from __future__ import annotations

import os
import sys

from mimocli.errors import MimoError

from . import bench, deblur, env, evaluate, quantize, serve, synth, train, video, weights  # noqa: F401  (registers the commands)
from .console import (
    PROGRESS_ENV,
    PROGRESS_SECONDS,
    WIDE,
    PlainProgress,
    app,
    err,
    fail_on_error,
    out,
    plain_status,
    print_table,
    progress_bar,
    report,
    warnings_to_stderr,
)

__all__ = [
    "PROGRESS_ENV",
    "PROGRESS_SECONDS",
    "WIDE",
    "PlainProgress",
    "app",
    "err",
    "fail_on_error",
    "main",
    "out",
    "plain_status",
    "print_table",
    "progress_bar",
    "report",
    "warnings_to_stderr",
]


# torch's OpenMP threads spin while they wait; on cores that other processes want too, that
# spinning took the slices the working thread needed (benchmarks/contention.py): waiting threads
# sleep instead. Set before torch is imported (libgomp reads it once, when it loads); a value the
# user set stays.
WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    os.environ.setdefault(*WAIT_POLICY)
    try:
        app()
    except MimoError as e:  # a command that did not map its own errors
        report(e)
        sys.exit(1)
