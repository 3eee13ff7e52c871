"""What every command shares: the Typer app, the two consoles (results on stdout; progress,
warnings and errors on stderr), error lines, progress bars. The commands import it; the package
(mimocli.cli) imports the commands."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from mimocli import __version__
from mimocli.errors import MimoError

app = typer.Typer(
    name="mimo",
    help="Remove motion blur from photos and videos with MIMO-UNet (Cho et al., ICCV 2021).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion, --show-completion: fast now that --help imports no torch
    context_settings={"help_option_names": ["-h", "--help"]},
)
# markup=False: paths and messages are printed verbatim ("shot[final].png" is no markup tag);
# styles come from Text objects.
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
out = Console(highlight=False, soft_wrap=True, markup=False)


WIDE = 160  # columns for tables when stdout is a file or a pipe, so that they never wrap


def print_table(table: Table) -> None:
    """A table on stdout at the terminal's width, or WIDE columns into a file or pipe."""
    console = out if out.is_terminal else Console(highlight=False, width=WIDE)
    console.print(table)


_DRAWN: list[Progress] = []  # the bars being drawn on the terminal now


class BarProgress(Progress):
    """A bar on the terminal that knows it is being drawn, so that results can go above it."""

    def start(self) -> None:
        super().start()
        if not self.disable:
            _DRAWN.append(self)

    def stop(self) -> None:
        if self in _DRAWN:
            _DRAWN.remove(self)
        super().stop()


def result(line: str) -> None:
    """A result line (a path, a JSON record) for stdout. While a bar is drawn and stdout is the
    same terminal, it goes above the bar through the bar's own console, which clears and redraws
    the bar around it (Rich's consoles write past each other's redirection, so a line printed on
    the other would land inside the bar); into a file or a pipe it goes straight to stdout."""
    if _DRAWN and out.is_terminal:
        _DRAWN[-1].console.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def report(error: MimoError | str, quiet: bool = False) -> None:
    """One red line on stderr: the message, then the fix in brackets."""
    line = Text.assemble(("Error:", "bold red"), " ")
    if isinstance(error, MimoError):
        line.append(error.message)
        if error.hint:
            line.append(f" ({error.hint})", "dim")
    else:
        line.append(error)
    err.print(line, highlight=False, soft_wrap=True)


PROGRESS_ENV = "MIMO_PROGRESS_SECONDS"  # seconds between plain progress lines off a terminal
PROGRESS_SECONDS = 30.0


class PlainProgress(Progress):
    """Off a terminal (nohup, docker, CI logs) a bar cannot be drawn: print one plain line per
    task now and then instead (done/total, rate, time left), so a long run is never silent."""

    def __init__(self, *args: Any, interval: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._report, name="mimo-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _report(self) -> None:
        said: dict[int, float] = {}
        while not self._stop.wait(self.interval):
            for task in self.tasks:
                moved = task.completed != said.get(task.id)
                if task.visible and not task.finished and task.completed and moved:
                    said[task.id] = task.completed
                    err.print(plain_status(task), markup=False, highlight=False)


def plain_status(task: Any) -> str:
    """'name: 240/1000, 1.25/s, 10:08 left' for a rich Task; a task with ``unit="bytes"`` in its
    fields in human sizes ('weights: 13.6/27.3 MB, 4.1 MB/s, 0:03 left')."""
    name = Text.from_markup(str(task.description)).plain
    if task.fields.get("unit") == "bytes":
        done = decimal(int(task.completed))
        if task.total:
            total = decimal(int(task.total))
            if done.split()[-1] == total.split()[-1]:  # one unit for both: "13.6/27.3 MB"
                done = done.rsplit(" ", 1)[0]
            done += f"/{total}"
        rate = f", {decimal(int(task.speed))}/s" if task.speed else ""
    else:
        done = _count(task.completed) + (f"/{_count(task.total)}" if task.total else "")
        rate = f", {RateColumn().render(task).plain}" if task.speed else ""
    left = ""
    if task.time_remaining is not None:
        m, sec = divmod(int(task.time_remaining), 60)
        left = f", {m // 60}:{m % 60:02d}:{sec:02d} left" if m >= 60 else f", {m}:{sec:02d} left"
    return f"{name}: {done}{rate}{left}"


def _count(value: float) -> str:
    """A count as a person writes it: 13631488, not 1.36315e+07."""
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


class RateColumn(ProgressColumn):
    """The rate as tqdm shows it: "2.50 photo/s" while fast, "3.2 s/photo" once slower than one a
    second (the task's ``unit`` field names the thing counted)."""

    def render(self, task: Any) -> Text:
        unit = task.fields.get("unit", "it")
        speed = task.finished_speed or task.speed
        if not speed:
            return Text(f"-- {unit}/s", style="progress.data.speed")
        text = f"{speed:.2f} {unit}/s" if speed >= 1 else f"{1 / speed:.1f} s/{unit}"
        return Text(text, style="progress.data.speed")


def progress_bar(*columns: str | ProgressColumn, quiet: bool = False) -> Progress:
    """A transient bar on stderr on a terminal; off one, a plain line every MIMO_PROGRESS_SECONDS
    (30); nothing with --quiet."""
    kwargs: dict[str, Any] = {"console": err, "transient": True}
    # The description as a column of its own, not a format string: Rich renders a string column
    # with the console's markup setting, which is off here (paths are verbatim), and the bar then
    # read "[progress.description][bold]photo.jpg".
    description = TextColumn("[progress.description]{task.description}", markup=True)
    if quiet or err.is_terminal:
        return BarProgress(description, BarColumn(), *columns, disable=quiet, **kwargs)
    try:
        interval = float(os.environ.get(PROGRESS_ENV) or PROGRESS_SECONDS)
    except ValueError:
        interval = PROGRESS_SECONDS
    return PlainProgress(description, *columns, disable=True, interval=max(interval, 0.1), **kwargs)


@contextmanager
def fail_on_error() -> Iterator[None]:
    """Turn a MimoError into one line on stderr and exit code 1."""
    try:
        yield
    except MimoError as e:
        report(e)
        raise typer.Exit(1) from None


@contextmanager
def warnings_to_stderr(quiet: bool) -> Iterator[None]:
    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if not quiet:
            err.print(Text.assemble(("Warning:", "yellow"), f" {message}"), soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        saved, warnings.showwarning = warnings.showwarning, show
        try:
            yield
        finally:
            warnings.showwarning = saved


def _version(value: bool) -> None:
    if value:
        out.print(f"mimo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Remove motion blur from photos and videos with MIMO-UNet (Cho et al., ICCV 2021)."""
