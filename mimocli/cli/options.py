"""Options that several commands share, declared once."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from mimocli.errors import WeightsError
from mimocli.registry import BUNDLED_VARIANT, DEFAULT_VARIANT, VARIANTS, get_variant
from mimocli.settings import BACKENDS, DEFAULT_OVERLAP, PRECISIONS, ClusterSettings, RunSettings


def one_of(*values: str) -> Callable[[str], str]:
    """A callback that accepts one of ``values`` (any case) and refuses anything else."""

    def parse(value: str) -> str:
        if value.strip().lower() not in values:
            raise typer.BadParameter(f"{value!r}: use one of {', '.join(values)}")
        return value.strip().lower()

    return parse


parse_precision = one_of(*PRECISIONS)


def parse_variant(value: str | None) -> str | None:
    """An unknown variant is a usage error (exit 2), like every other bad option."""
    if value is None:
        return value
    try:
        get_variant(value)
    except WeightsError as e:
        raise typer.BadParameter(f"{e.message} ({e.hint})") from None
    return value


def parse_variant_or_all(value: str | None) -> str | None:
    return value if value is not None and value.strip().lower() == "all" else parse_variant(value)


def _variants_help() -> str:
    """Every variant with its aliases, the bundled one marked, and the default: from the registry."""
    bundled = get_variant(BUNDLED_VARIANT).name
    names = [
        f"{v.name} ({', '.join(v.aliases)}{'; bundled, works offline' if v.name == bundled else ''})"
        if v.aliases
        else v.name
        for v in VARIANTS
    ]
    return (
        f"{', '.join(names)}. Default: {DEFAULT_VARIANT}, or {bundled} where that cannot be had "
        "(with a warning). With --weights, the weights decide."
    )


VARIANT = typer.Option(None, "--variant", "-m", callback=parse_variant, help=_variants_help(), show_default=False)
WEIGHTS = typer.Option(
    None,
    "--weights",
    "-w",
    help="Weights file (.safetensors/.pkl/.pth) or hf://owner/repo/file (optionally @revision).",
)
CACHE_DIR: Path | None = typer.Option(
    None, "--cache-dir", help="Weights cache (default: $MIMO_CACHE_DIR or <HF_HOME>/assets/mimocli/default/weights)."
)
DEVICE = typer.Option("auto", "--device", "-d", help="auto, cpu, cuda, cuda:N or mps.")
PRECISION = typer.Option(
    "auto",
    "--precision",
    "-p",
    callback=parse_precision,
    help="auto (GPU: bf16 on Ampere+, else fp16; CPU: fp32/bf16, faster measured; MPS: fp32), fp32, bf16, fp16, int8.",
)
BACKEND = typer.Option(
    "auto",
    "--backend",
    callback=one_of(*BACKENDS),
    help="What runs the network: torch, or OpenVINO (CPU, fp32/bf16; pip install \"mimocli[openvino]\"). "
    "auto: on the CPU the faster of the two, measured once per machine; elsewhere torch.",
)
CHANNELS_LAST = typer.Option(
    None,
    "--channels-last/--no-channels-last",
    help="NHWC activations (faster with oneDNN and cuDNN). Default: on for CPU and CUDA.",
    show_default=False,
)
REUSE_MEMORY = typer.Option(
    True,
    "--reuse-memory/--no-reuse-memory",
    help="On CPU, keep freed memory for reuse instead of returning it to the system (glibc): 20% faster at 720p.",
)
TILE = typer.Option("auto", "--tile", "-t", help="Tile side in pixels; auto fits free memory; 0 never tiles.")
TILE_OVERLAP = typer.Option(DEFAULT_OVERLAP, "--tile-overlap", min=0, help="Overlap between tiles in pixels.")
ENSEMBLE = typer.Option(False, "--ensemble", help="Average the 8 flips/rotations (MIMO-UNet++); 8x slower.")
THREADS = typer.Option(0, "--threads", min=0, help="CPU threads for the network; 0: one per physical core.")


def compile_option(default_help: str) -> bool | None:
    return typer.Option(  # type: ignore[no-any-return]
        None,
        "--compile/--no-compile",
        help=f"torch.compile the network: pays over many frames of one size. Default: {default_help}.",
        show_default=False,
    )


VERBOSE = typer.Option(
    False, "--verbose", "-v", help="Say the device, precision, tile size and weights used (file and sha256)."
)
BATCH = typer.Option(1, "--batch", "-b", min=1, help="Frames per forward pass.")


def parse_tile(value: str) -> int | str:
    v = value.strip().lower()
    if v == "auto":
        return "auto"
    if v.isdigit():
        return int(v)
    raise typer.BadParameter(f"{value!r}: use auto, 0 (no tiling) or a size in pixels such as 512")


Command = TypeVar("Command", bound=Callable[..., Any])


def run_options(
    *,
    compile_default: bool | str = False,
    compile_help: str = "off",
    precision: Any = PRECISION,
    omit: tuple[str, ...] = (),
    fixed: dict[str, Any] | None = None,
) -> Callable[[Command], Command]:
    """Give a command the options of a RunSettings, and the command one ``run: RunSettings``
    argument built from them. The options take the place of ``run`` in the command's signature
    (and so in its --help). ``omit`` leaves options out, ``fixed`` gives what those take instead;
    --compile left unset means ``compile_default``."""
    declared: dict[str, tuple[Any, Any]] = {
        "device": (str, DEVICE),
        "precision": (str, precision),
        "backend": (str, BACKEND),
        "channels_last": (bool | None, CHANNELS_LAST),
        "compile": (bool | None, compile_option(compile_help)),
        "threads": (int, THREADS),
        "reuse_memory": (bool, REUSE_MEMORY),
        "tile": (str, TILE),
        "tile_overlap": (int, TILE_OVERLAP),
        "ensemble": (bool, ENSEMBLE),
        "batch": (int, BATCH),
    }
    offered = {name: spec for name, spec in declared.items() if name not in omit}
    return lambda command: _expand(
        command, "run", offered, lambda v: make_run_settings(v, compile_default, fixed or {})
    )


def _expand(command: Command, name: str, declared: dict[str, tuple[Any, Any]], build: Callable[..., Any]) -> Command:
    """``command`` with its parameter ``name`` replaced, in its signature and --help, by the
    options ``declared`` (name: (type, typer option)); ``build`` makes the value of ``name``
    from theirs."""
    signature = inspect.signature(command)
    params: list[inspect.Parameter] = []
    for p in signature.parameters.values():
        if p.name != name:
            params.append(p)
            continue
        params += [
            inspect.Parameter(option, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=info, annotation=kind)
            for option, (kind, info) in declared.items()
        ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs[name] = build({option: kwargs.pop(option) for option in declared})
        return command(*args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != name}
    return wrapper  # type: ignore[return-value]


def make_run_settings(values: dict[str, Any], compile_default: bool | str, fixed: dict[str, Any]) -> RunSettings:
    values = {**fixed, **values}
    if "tile" in values and isinstance(values["tile"], str):
        values["tile"] = parse_tile(values["tile"])
    if values.get("compile") is None:
        values["compile"] = compile_default
    try:
        return RunSettings(**values)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def cluster_options(command: Command) -> Command:
    """Give a command --ray, --ray-replicas, --ray-cpus and --ray-gpus, and the command one
    ``cluster: ClusterSettings | None`` argument (None without --ray: Ray is never imported)."""
    declared: dict[str, tuple[Any, Any]] = {
        "ray": (
            str | None,
            typer.Option(
                None,
                "--ray",
                help="Run on a Ray cluster: auto (the running one, RAY_ADDRESS), local (a private one here) "
                "or ray://host:port. Needs the ray extra.",
            ),
        ),
        "ray_replicas": (int, typer.Option(0, "--ray-replicas", min=0, help="Model replicas; 0: as many as fit.")),
        "ray_cpus": (float, typer.Option(1.0, "--ray-cpus", min=0, help="CPUs per replica.")),
        "ray_gpus": (float, typer.Option(0.0, "--ray-gpus", min=0, help="GPUs per replica (1: one GPU each).")),
    }
    return _expand(command, "cluster", declared, _cluster_settings)


def _cluster_settings(values: dict[str, Any]) -> ClusterSettings | None:
    if values["ray"] is None:
        return None
    try:
        return ClusterSettings(values["ray"].strip(), values["ray_replicas"], values["ray_cpus"], values["ray_gpus"])
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--ray-cpus") from None
