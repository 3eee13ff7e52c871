"""Weights: resolve -> download -> verify -> convert -> load. Never prints.

Sources, in order: an explicit local file (safetensors, or the authors' torch pickle), an
``hf://owner/repo/file[@revision]`` reference through huggingface-hub, then the registry's
sources (the authors' Google Drive files, or ``bundled://FILE``: a file shipped inside the
package, checked against the sha256 the registry pins and never copied or downloaded). Foreign pickles are read with
``torch.load(weights_only=True)`` only and converted once to safetensors in the cache, where
their size and sha256 are recorded; every later load is checked against that record.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from .cache import (
    CACHE_ENV,
    IMPORTED,
    cache_dir,
    cache_listing,
    cached_weights,
    read_record,
    record_path,
    side_cache,
    verify_bundled,
    verify_cached,
)
from .checkpoints import Network, build_model, convert, read_state_dict
from .downloads import (
    ByteProgress,
    download_gdrive,
    download_url,
    hf_download,
    offline,
    sha256_file,
)
from .errors import DownloadError, IntegrityError, OfflineError, WeightsError
from .registry import (
    BUNDLED_VARIANT,
    DEFAULT_VARIANT,
    Variant,
    WeightsEntry,
    get_variant,
    load_registry,
    registry_entry,
)

__all__ = [  # the cache's part lives in mimocli.cache (no torch); these names stay importable from here
    "CACHE_ENV",
    "IMPORTED",
    "LoadedWeights",
    "cache_dir",
    "cache_listing",
    "cached_weights",
    "download_weights",
    "import_weights",
    "load_model",
    "load_weights",
    "read_record",
    "resolve_weights",
    "side_cache",
    "verify_bundled",
    "verify_cached",
]


# -- resolution -------------------------------------------------------------------------------
def resolve_weights(
    variant: Variant | str,
    weights: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    on_progress: ByteProgress | None = None,
) -> Path:
    """The safetensors (or, for local files, original) path to load for ``variant``.

    Raises WeightsError (or a subclass) with the fix when none can be had.
    """
    v = get_variant(variant) if isinstance(variant, str) else variant
    if weights is not None:  # a file of the user's: the cache folder is not even made
        ref = str(weights)
        if ref.startswith("hf://"):
            got = hf_download(ref, Path(cache) if cache else None)
            return got if got.suffix == ".safetensors" else import_weights(got, cache=cache_dir(cache))[0]
        return Path(ref).expanduser()
    key = v.weights_key
    entry = load_registry().get(key)
    if entry is not None and entry.bundled is not None:
        return verify_bundled(entry)
    root = cache_dir(cache)
    path = cached_weights(key, root)
    if path.exists():
        verify_cached(path)
        return path
    return download_weights(key, cache=root, on_progress=on_progress)


def download_weights(
    key: str,
    cache: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_progress: ByteProgress | None = None,
) -> Path:
    """Fetch the registered weights ``key`` from its sources in order, convert and cache them.

    Raises OfflineError with instructions when offline or unreachable.
    """
    entry = registry_entry(get_variant(key).weights_key if key not in load_registry() else key)
    if entry.bundled is not None:
        return verify_bundled(entry)  # shipped with the package: nothing to fetch
    root = cache_dir(cache)
    dest = cached_weights(entry.key, root)
    if dest.exists() and not force:
        verify_cached(dest)
        return dest
    root.mkdir(parents=True, exist_ok=True)
    # One download per file at a time, across processes; who waited finds it done.
    with FileLock(str(dest) + ".lock"):
        if dest.exists() and not force:
            verify_cached(dest)
            return dest
        return _download(entry, root, dest, on_progress)


def _download(entry: WeightsEntry, root: Path, dest: Path, on_progress: ByteProgress | None) -> Path:
    how = f"run `mimo weights download {entry.key}` on a connected machine and copy {root} here, or pass --weights PATH"
    if offline():
        raise OfflineError(f"no cached weights for {entry.key} and HF_HUB_OFFLINE is set", how)
    errors: list[str] = []
    for source in entry.sources:
        try:
            if source.startswith("gdrive://"):
                raw = root / "downloads" / entry.filename
                download_gdrive(source.removeprefix("gdrive://"), raw, entry.sha256, entry.size, on_progress)
            elif source.startswith(("https://", "http://")):
                raw = root / "downloads" / entry.filename
                download_url(source, raw, entry.sha256, entry.size, entry.git_blob_sha1, on_progress)
            else:
                raw = hf_download(source)
            sd = read_state_dict(raw)
            _, variant = build_model(sd, source)
            slot = get_variant(entry.architecture)
            if (variant.architecture, variant.num_res, variant.base_channel) != (
                slot.architecture,
                slot.num_res,
                slot.base_channel,
            ):
                raise IntegrityError(
                    f"{source}: holds a {variant.shape()}, but {entry.key} is a {slot.shape()}",
                    "the published file has changed; report it, or pass --weights PATH",
                )
            info = {"source": source, "source_sha256": sha256_file(raw), "source_size": raw.stat().st_size}
            convert(sd, variant, dest, **info)
            if raw.parent == root / "downloads":
                raw.unlink()
            return dest
        except OfflineError as e:
            errors.append(e.message)  # the one fix for all of them follows
            continue
    raise OfflineError(f"could not download weights for {entry.key}: {'; '.join(errors)}", how)


def import_weights(
    src: str | os.PathLike[str], key: str | None = None, cache: str | os.PathLike[str] | None = None
) -> tuple[Path, Variant]:
    """Convert a checkpoint to safetensors in the cache, once. With ``key``, cache it as that
    variant's weights (the official slot that ``--variant`` uses); without, apart from them, as
    imported/NAME-SHA256.safetensors, so that a file of unknown origin never passes for the
    authors' weights. Raises WeightsError when it is no MIMO-UNet or does not fit ``key``."""
    p = Path(src).expanduser()
    sd = read_state_dict(p)
    _, detected = build_model(sd, str(p))
    root = cache_dir(cache)
    digest = sha256_file(p)
    if key is not None:
        v = get_variant(key)
        if (v.architecture, v.num_res, v.base_channel) != (
            detected.architecture,
            detected.num_res,
            detected.base_channel,
        ):
            raise WeightsError(
                f"{p}: holds {detected.name} weights ({detected.shape()}), not {v.name}",
                f"import it as {detected.name}",
            )
        dest = cached_weights(v.weights_key, root)
    else:
        dest = root / IMPORTED / f"{p.stem}-{digest[:12]}.safetensors"
    if dest.exists() and record_path(dest).exists():
        with contextlib.suppress(IntegrityError):
            if verify_cached(dest).get("source_sha256") == digest:
                return dest, detected  # converted once already
    convert(sd, detected, dest, source=str(p.resolve()), source_sha256=digest, source_size=p.stat().st_size)
    return dest, detected


@dataclass(frozen=True)
class LoadedWeights:
    """A model and where its weights came from (for records and bug reports)."""

    model: Network
    variant: Variant  # the variant asked for, or the bundled fallback that stood in for it
    name: str  # the registry key, or the file the user passed
    path: Path
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "variant": self.variant.name, "sha256": self.sha256}

    @property
    def label(self) -> str:
        """How outputs name the model: the variant, or the file's name for weights the user passed."""
        return self.variant.name if self.name == self.variant.weights_key else Path(self.name).name


def fallback_entry() -> WeightsEntry | None:
    """The bundled weights that stand in when the default variant's cannot be had, if any are
    marked good enough for it (``"fallback": true`` in the registry)."""
    return next((e for e in load_registry().values() if e.fallback and e.bundled is not None), None)


def load_weights(
    variant: str | None = None,
    device: str | torch.device = "auto",
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    on_progress: ByteProgress | None = None,
) -> LoadedWeights:
    """``load_model`` plus the weights' name, path and sha256.

    With neither ``variant`` nor ``weights``, the default variant (MIMO-UNet+) is used when it is
    cached or can be downloaded; when it cannot (offline, unreachable), the bundled model stands in
    with a warning (``warnings.warn``) if the registry marks one as good enough, and otherwise the
    error names the bundled variant as an option.
    Raises WeightsError (or a subclass) when no weights can be had.
    """
    from .device import resolve_device

    v = get_variant(variant or DEFAULT_VARIANT)
    try:
        path = resolve_weights(v, weights, cache_dir, on_progress)
    except (OfflineError, DownloadError) as e:
        if variant is not None or weights is not None:
            raise
        fb = fallback_entry()
        if fb is None:
            raise type(e)(
                e.message, f"{e.hint}; or use mimocli's own small bundled model: --variant {BUNDLED_VARIANT}"
            ) from e
        warnings.warn(
            f"{v.name} weights cannot be had ({e.message}); using mimocli's bundled {fb.key}, which deblurs "
            f"less well: for {v.name}, {e.hint}",
            UserWarning,
            stacklevel=2,
        )
        v = get_variant(fb.architecture)
        path = verify_bundled(fb)
    model, detected = build_model(read_state_dict(path), str(path))
    if weights is not None and variant is None:  # the file decides what it holds, not the default
        v = detected
    model.ensemble = v.ensemble  # MIMO-UNet++ is MIMO-UNet+ run as a self-ensemble
    name = str(weights) if weights is not None else v.weights_key
    return LoadedWeights(model.to(resolve_device(device)), v, name, path, sha256_file(path))


def load_model(
    variant: str = "mimo-unet-plus",
    device: str | torch.device = "auto",
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    on_progress: ByteProgress | None = None,
) -> Network:
    """A MIMO-UNet in eval mode with pretrained weights, on ``device`` ("auto": CUDA, else MPS, else CPU).

    ``weights``: a local .safetensors/.pkl/.pth or hf://owner/repo/file[@rev]; default: the
    variant's registered weights, downloaded once into the cache (or shipped in the package, for
    mimo-unet-lite). The architecture follows the weights. Raises WeightsError (or a subclass)
    when they cannot be had.
    """
    return load_weights(variant, device, weights, cache_dir, on_progress).model
