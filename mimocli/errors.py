"""The exceptions mimocli raises on purpose. Each carries a message and, where one exists, a fix."""

from __future__ import annotations


class MimoError(Exception):
    """Base class: a failure the user can act on. ``hint`` says how."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"

    def __reduce__(self) -> tuple[type[MimoError], tuple[str, str | None]]:
        return type(self), (self.message, self.hint)  # the hint survives pickling (to and from workers)


class ImageError(MimoError):
    """An input image is missing, unreadable, corrupt, empty or too large."""


class OutputError(MimoError):
    """An output cannot be written: it exists, it is an input, or its folder is not writable."""


class WeightsError(MimoError):
    """Weights cannot be found, read, or do not fit a known architecture."""


class DownloadError(WeightsError):
    """A download failed or was cut short."""


class IntegrityError(WeightsError):
    """A file does not match the size or sha256 recorded for it."""


class OfflineError(WeightsError):
    """Weights are needed from the network but the network is off or unreachable."""


class NotFiniteError(WeightsError):
    """The network's output holds NaN/Inf values even in fp32: the weights are damaged."""


class DeviceError(MimoError):
    """The requested device or precision is not available here."""


class VideoError(MimoError):
    """A video cannot be read, decoded, encoded or written as asked."""


class ClusterError(MimoError):
    """A Ray cluster cannot be joined or started, or lost the work it was given."""
