"""The HTTP encoder API's body formats, shared by the server and :class:`~sslsteal_fast.victim.http.HttpVictim`.

A batch of images (a query) or of representations (its answer) travels as one array, in one of:

* **raw** (``Content-Type: application/octet-stream``): the array's bytes, C order, little-endian,
  with its shape in ``X-Shape`` (``N,C,H,W``) and its dtype in ``X-Dtype`` (``uint8`` or
  ``float32``); the compact format, and the default;
* **npy** (``application/x-npy``): a ``.npy`` file (``numpy.save``), pickles refused;
* **json** (``application/json``), for small batches: ``{"shape": [...], "dtype": "uint8",
  "data": "<base64 of the raw bytes>"}``.

An answer comes back in the format of its query, float32. A body that is not what its headers say
raises :class:`WireError` (a ``ValueError``) with a message for the client; nothing here allocates
more than the body's own size, whatever shape a header claims.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "DTYPES",
    "DTYPE_HEADER",
    "FORMATS",
    "JSON",
    "NPY",
    "RAW",
    "SHAPE_HEADER",
    "WireError",
    "decode",
    "encode",
    "media_format",
]

RAW = "application/octet-stream"
NPY = "application/x-npy"
JSON = "application/json"
#: Format name -> its media type.
FORMATS = {"raw": RAW, "npy": NPY, "json": JSON}
_ALIASES = {RAW: "raw", NPY: "npy", "application/npy": "npy", JSON: "json"}
SHAPE_HEADER = "X-Shape"
DTYPE_HEADER = "X-Dtype"
#: The element types a body may carry (little-endian).
DTYPES: dict[str, np.dtype] = {"uint8": np.dtype("<u1"), "float32": np.dtype("<f4")}
_MAX_RANK = 8


class WireError(ValueError):
    """A body that does not hold the array its headers describe (the API answers 400)."""


def media_format(content_type: str | None) -> str:
    """``raw``, ``npy`` or ``json`` for a ``Content-Type`` header (parameters ignored; none means raw)."""
    media = (content_type or RAW).split(";", 1)[0].strip().lower()
    if media not in _ALIASES:
        raise WireError(f"unsupported Content-Type {media!r}; send one of {', '.join(sorted(_ALIASES))}")
    return _ALIASES[media]


def _shape(text: Any, where: str) -> tuple[int, ...]:
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        if not all(p.isdigit() for p in parts):
            raise WireError(f"{where} must be comma-separated non-negative integers like 16,3,32,32, got {text!r}")
        dims = [int(p) for p in parts]
    elif isinstance(text, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in text):
        dims = list(text)
    else:
        raise WireError(f"{where} must be a list of non-negative integers, got {text!r}")
    if not 1 <= len(dims) <= _MAX_RANK:
        raise WireError(f"{where} must have 1 to {_MAX_RANK} dimensions, got {len(dims)}")
    return tuple(dims)


def _dtype(name: Any, where: str) -> np.dtype:
    if not isinstance(name, str) or name.strip().lower() not in DTYPES:
        raise WireError(f"{where} must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name.strip().lower()]


def _from_bytes(data: bytes, shape: tuple[int, ...], dtype: np.dtype, where: str) -> np.ndarray:
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise WireError(
            f"{where}: shape {list(shape)} of {dtype.name} needs {expected} bytes, the body has {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _npy(body: bytes) -> np.ndarray:
    """A ``.npy`` body, its header checked against its length before any allocation."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
        shape, fortran, dtype = readers[version](stream)
    except (ValueError, OSError, SyntaxError, TypeError, EOFError) as exc:
        raise WireError(f"the body is not a .npy file ({exc})") from None
    if dtype.hasobject:
        raise WireError("a .npy body must hold numbers, not Python objects")
    name = {"u1": "uint8", "f4": "float32"}.get(dtype.kind + str(dtype.itemsize))
    if name is None:
        raise WireError(f"the .npy body holds {dtype}; send uint8 or float32")
    dims = _shape(list(shape), "the .npy shape")
    data = body[stream.tell() :]
    array = _from_bytes(data, dims[::-1] if fortran else dims, dtype, "the .npy body")
    array = array.T if fortran else array
    return array.astype(DTYPES[name], copy=False)


def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> np.ndarray:
    """The array a body holds (read-only; uint8 or float32), per its ``Content-Type`` and headers.

    Raises:
        WireError: an unsupported type, a missing or malformed header, a body of the wrong length,
            a .npy or JSON body that does not parse.
    """
    fmt = media_format(content_type)
    if fmt == "raw":
        lower = {k.lower(): v for k, v in headers.items()}
        if SHAPE_HEADER.lower() not in lower or DTYPE_HEADER.lower() not in lower:
            raise WireError(f"a raw body needs the headers {SHAPE_HEADER} (N,C,H,W) and {DTYPE_HEADER} (uint8|float32)")
        shape = _shape(lower[SHAPE_HEADER.lower()], SHAPE_HEADER)
        return _from_bytes(body, shape, _dtype(lower[DTYPE_HEADER.lower()], DTYPE_HEADER), "the body")
    if fmt == "npy":
        return _npy(body)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"the body is not JSON ({exc})") from None
    if not isinstance(doc, dict) or set(doc) != {"shape", "dtype", "data"}:
        raise WireError('a JSON body must be {"shape": [...], "dtype": "uint8"|"float32", "data": "<base64>"}')
    if not isinstance(doc["data"], str):
        raise WireError('"data" must be the array\'s bytes in base64')
    try:
        data = base64.b64decode(doc["data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireError(f'"data" is not valid base64 ({exc})') from None
    return _from_bytes(data, _shape(doc["shape"], '"shape"'), _dtype(doc["dtype"], '"dtype"'), "the JSON data")


def encode(array: np.ndarray, fmt: str = "raw") -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` carrying ``array`` (uint8 or float32) in ``fmt``; headers include ``Content-Type``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    name = {"u1": "uint8", "f4": "float32"}.get(array.dtype.kind + str(array.dtype.itemsize))
    if name is None:
        raise ValueError(f"only uint8 and float32 arrays travel, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=DTYPES[name])
    headers = {"Content-Type": FORMATS[fmt]}
    if fmt == "raw":
        headers.update({SHAPE_HEADER: ",".join(str(d) for d in array.shape), DTYPE_HEADER: name})
        return array.tobytes(), headers
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        return buf.getvalue(), headers
    doc = {"shape": list(array.shape), "dtype": name, "data": base64.b64encode(array.tobytes()).decode("ascii")}
    return json.dumps(doc).encode(), headers
