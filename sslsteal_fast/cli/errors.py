"""Which failures are the user's to fix (one line on stderr, exit 2) and which are the package's bugs.

The package's contract: bad arguments raise ``ValueError`` (:class:`~sslsteal_fast.util.checks.
ArgumentTypeError` is one), a missing file ``FileNotFoundError``, a corrupt or invalid file a
``ValueError`` naming it, a missing optional dependency
:class:`~sslsteal_fast.util.extras.MissingExtra` (saying what to install). Besides those, the command line treats as expected every ``OSError`` (a
path that is a file where a folder is needed, a permission, a full disk), a loss that diverged
(``FloatingPointError``, whose message says what to change) and the errors the file-format libraries
raise on a corrupt file (listed in :data:`FILE_FORMAT_ERRORS`, matched by name so that checking
imports none of them). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from sslsteal_fast.util.extras import MissingExtra

__all__ = ["FILE_FORMAT_ERRORS", "expected_error", "one_line"]

_ORT = "onnxruntime.capi.onnxruntime_pybind11_state."

#: ``module.Class`` of the third-party exceptions that mean "this file is corrupt or not what it says".
FILE_FORMAT_ERRORS = frozenset(
    {
        "zipfile.BadZipFile",  # a corrupt .npz
        "_pickle.UnpicklingError",  # a corrupt CIFAR batch
        "safetensors._safetensors_rust.SafetensorError",  # a corrupt checkpoint
        "google.protobuf.message.DecodeError",  # a corrupt .onnx read by onnx
        "onnx.onnx_cpp2py_export.checker.ValidationError",
        "PIL.Image.DecompressionBombError",  # an image too large to be one
        # ONNX Runtime refusing a model file or a provider (not its internal errors).
        *(_ORT + name for name in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoModel")),
        *(_ORT + name for name in ("NoSuchFile", "NotImplemented", "EPFail")),
    }
)

_EXPECTED = (ValueError, OSError, EOFError, FloatingPointError)


def one_line(message: str) -> str:
    """``message`` with its lines joined by "; " (an error is reported on one line)."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def _names(exc: BaseException) -> set[str]:
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}


def expected_error(exc: BaseException) -> str | None:
    """The one-line message for an expected failure, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        return one_line(f"{where}: {exc.strerror}")
    if isinstance(exc, (ValueError, FileNotFoundError, FloatingPointError, MissingExtra)):
        return one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, _EXPECTED) or _names(exc) & FILE_FORMAT_ERRORS:
        text = one_line(str(exc))
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return None
