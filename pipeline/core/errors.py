"""Vigil's one exception tree.

Every error the library raises on purpose is a :class:`VigilError`. Errors from the libraries
underneath (onnxruntime, OpenCV, PyYAML, redis, ...) are wrapped at the boundary where Vigil calls
them, with ``raise ... from exc`` so the original traceback stays attached; redis-py's, at every call,
by the one mapping of :func:`pipeline.core.redis_errors.redis_errors`.

Each message says what went wrong, where (a file, a config path, a stream id) and how to fix it.
Messages never contain secrets: URLs are passed through :func:`pipeline.core.redact.redact_url` first.

Tree::

    VigilError
    ├── ConfigError            invalid YAML, unknown keys, bad values, unset ${VAR}
    ├── ModelError
    │   ├── ModelNotFoundError     no model file where one was expected (offline, no --model)
    │   ├── ModelLoadError         file exists but is not a loadable ONNX model
    │   ├── ModelContractError     graph is not an image classifier Vigil can feed
    │   └── ModelPrecisionError    an int8 model that may not be served (agreement with fp32 too low, ...)
    ├── LabelsError            labels file unreadable or with the wrong class count
    ├── SceneMapError          scene map unreadable or referencing unknown classes
    ├── ImageError             an image file that cannot be read or decoded
    ├── InputError             frames passed to the runtime with the wrong dtype/shape
    ├── SourceError            a camera/file/device cannot be opened or read (``reason``)
    ├── BusError               Redis (frame bus, results) refused or failed a command
    │   ├── BusUnavailableError    an instance cannot be reached (refused, lost, timed out), or is in backoff
    │   └── BusFullError           an instance is at its maxmemory and refuses new frames
    ├── FrameFormatError       a frame-bus entry that is not a valid frame message
    ├── ResultFormatError      a results-stream entry that is not a valid result record
    ├── SinkError              a sink could not take a batch now (it is delivered again)
    │   └── SinkRejectedError      the sink's output refused it for good (dead-lettered, not retried)
    └── DatasetError           a labelled image folder that cannot be used (empty class, ...)
"""

from __future__ import annotations


class VigilError(Exception):
    """Base class of every error Vigil raises on purpose."""


class ConfigError(VigilError):
    """The configuration is invalid. ``problems`` lists each one as ``path: message``."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        super().__init__(message)


class ModelError(VigilError):
    """Base class of model problems."""


class ModelNotFoundError(ModelError):
    """No model file is available."""


class ModelLoadError(ModelError):
    """The model file exists but cannot be loaded."""


class ModelContractError(ModelError):
    """The model loads but its inputs/outputs are not those of an image classifier."""


class ModelPrecisionError(ModelError):
    """The model's precision does not match ``inference.precision``, or an int8 model may not be served: no
    recorded agreement with its fp32 model, one under ``inference.min_int8_agreement``, or made from an fp32
    model that has changed since."""


class LabelsError(VigilError):
    """The labels file is unreadable or does not match the model's class count."""


class SceneMapError(VigilError):
    """The scene map is unreadable or refers to classes the model does not have."""


class ImageError(VigilError):
    """An image file cannot be read or decoded."""


class InputError(VigilError):
    """Frames handed to the runtime are not uint8 [N, H, W, 3]."""


class SourceError(VigilError):
    """A video source (camera, file, device) cannot be opened or read. ``reason`` is a short cause.

    ``permanent``: retrying cannot help until the source or the config changes (a file that is not a
    video, credentials rejected, no stream at that path), unlike a network error or a timeout.
    """

    def __init__(self, message: str, reason: str = "", *, permanent: bool = False) -> None:
        self.reason = reason or message
        self.permanent = permanent
        super().__init__(message)


class BusError(VigilError):
    """The frame bus (Redis) refused or failed a command."""


class BusUnavailableError(BusError):
    """A Redis instance of the bus cannot be reached (connection refused or lost, timed out, a cluster that is
    down); the frame publisher also raises it, without I/O, while the instance is in backoff."""


class BusFullError(BusError):
    """A Redis instance of the frame bus is at its ``maxmemory`` and refuses new frames (it is up)."""


class UnsupportedServerError(BusError):
    """A server of the frame bus is a Redis (or Valkey) that Vigil cannot work with: refused at start (exit 2)."""


class FrameFormatError(VigilError):
    """A frame-bus entry is not a valid frame message (wrong version, missing field, bad size)."""


class ResultFormatError(VigilError):
    """A results-stream entry is not a valid result record (wrong version, missing field, bad type)."""


class SinkError(VigilError):
    """A sink could not take a batch of results now (they are delivered again, with backoff)."""


class SinkRejectedError(SinkError):
    """The sink's output refused a batch and would refuse it again: retrying cannot help.

    ``reason`` is a short cause (no secrets), ``status`` the HTTP status when there is one. ``split``:
    the refusal may concern only some records of the batch (a receiver rejecting one bad record), so the
    sink runner tries halves to deliver the others; False when the whole sink refuses everything (a path
    that is a directory, a Redis user without permission) or its output is derived from the batch as a
    whole (events), where trying halves again cannot single out a record.
    """

    def __init__(self, message: str, reason: str = "", *, status: int | None = None, split: bool = True) -> None:
        self.reason = reason or message
        self.status = status
        self.split = split
        super().__init__(message)


class DatasetError(VigilError):
    """A labelled image folder cannot be used: no classes, an empty class, unreadable images..."""
