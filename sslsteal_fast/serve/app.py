"""The HTTP layer: a FastAPI application over a :class:`~.service.Service` (served by uvicorn).

Endpoints: ``POST /v1/embed``, ``GET /v1/usage``, ``GET /v1/model``, ``GET /v1/receipts/{id}``,
``GET /healthz``; OpenAPI docs at ``/docs``. Every error is a JSON object ``{"error": message, ...}``
with its status; an unexpected failure is a 500 whose body says only that (its traceback goes to the
server's log, never to the client).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sslsteal_fast._version import __version__
from sslsteal_fast.serve.batcher import Answer
from sslsteal_fast.serve.service import ServeError, Service
from sslsteal_fast.victim import wire
from sslsteal_fast.victim.http import BILLED, FORWARD_PASSES, REMAINING, REPLAYED, REQUEST_ID

__all__ = ["create_app"]

logger = logging.getLogger("sslsteal_fast.serve")

_BODY = {
    "required": True,
    "content": {
        wire.RAW: {"schema": {"type": "string", "format": "binary"}},
        wire.NPY: {"schema": {"type": "string", "format": "binary"}},
        wire.JSON: {
            "schema": {
                "type": "object",
                "required": ["shape", "dtype", "data"],
                "properties": {
                    "shape": {"type": "array", "items": {"type": "integer"}, "example": [2, 3, 32, 32]},
                    "dtype": {"type": "string", "enum": list(wire.DTYPES)},
                    "data": {"type": "string", "format": "byte", "description": "the raw C-order bytes, base64"},
                },
            }
        },
    },
}
_EMBED_DOC = (
    "A batch of images (N, C, H, W), uint8 (0-255) or float32 (in the model's range, e.g. [0, 1]), as raw "
    f"bytes ({wire.RAW} with {wire.SHAPE_HEADER}: N,C,H,W and {wire.DTYPE_HEADER}: uint8|float32), a .npy file "
    f"({wire.NPY}) or JSON with base64 ({wire.JSON}, small batches). The answer is float32 (N, D) in the same "
    f"format. {BILLED}: rows billed; {REMAINING}: budget left; {FORWARD_PASSES}: rows the model ran. Send a "
    f"unique {REQUEST_ID} to be able to ask GET /v1/receipts/{{id}} for an answer whose connection broke. "
    "401 bad key; 400 malformed body or images; 402 budget exceeded; 409 that request id is in progress; "
    "413 too large; 429 rate limited (Retry-After)."
)


def _error(exc: ServeError) -> JSONResponse:
    return JSONResponse({"error": exc.message, **exc.extra}, status_code=exc.status, headers=exc.headers)


async def _body(request: Request, service: Service, fmt: str) -> bytes:
    """The request body, refused (413) as soon as it is known to be over the limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServeError(400, "malformed Content-Length")
        service.check_size(fmt, int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        service.check_size(fmt, size)
        chunks.append(chunk)
    return b"".join(chunks)


def _respond(answer: Answer, fmt: str, remaining: int | None, request_id: str | None) -> Response:
    body, headers = wire.encode(answer.served, fmt)
    headers[BILLED] = str(answer.billed)
    headers[FORWARD_PASSES] = str(answer.forward_passes)
    headers[REMAINING] = "unlimited" if remaining is None else str(remaining)
    if answer.replayed:
        headers[REPLAYED] = "1"
    if request_id is not None:
        headers[REQUEST_ID] = request_id
    media = headers.pop("Content-Type")
    return Response(body, media_type=media, headers=headers)


def create_app(service: Service) -> FastAPI:
    """The application serving ``service`` (closed when the application shuts down)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(service.close)

    app = FastAPI(
        title="sslsteal_fast encoder API",
        version=__version__,
        description="A self-supervised encoder behind a billed, defended API: keys, budgets, receipts.",
        lifespan=lifespan,
    )

    @app.exception_handler(ServeError)
    async def refused(_: Request, exc: ServeError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal server error"}, status_code=500)

    def client_of(request: Request) -> Any:
        return service.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))

    @app.get("/healthz", summary="liveness, and how the batcher has been batching")
    async def healthz() -> dict[str, Any]:
        b = service.batcher
        return {"status": "ok", "batches": b.batches, "batched_rows": b.batched_rows, "waiting": b.waiting}

    @app.get("/v1/model", summary="the served model: input shape, output dimension, sha256, limits")
    async def model(request: Request) -> dict[str, Any]:
        client_of(request)
        return service.model_info()

    @app.get("/v1/usage", summary="the caller's billed queries, remaining budget and defense counters")
    async def usage(request: Request) -> dict[str, Any]:
        client = client_of(request)
        return await asyncio.to_thread(service.usage, client)

    @app.post(
        "/v1/embed",
        summary="representations of a batch of images",
        description=_EMBED_DOC,
        openapi_extra={"requestBody": _BODY},
    )
    async def embed(request: Request) -> Response:
        client = client_of(request)
        try:
            fmt = wire.media_format(request.headers.get("content-type"))
        except wire.WireError as exc:
            raise ServeError(415, str(exc)) from None
        body = await _body(request, service, fmt)
        request_id = request.headers.get(REQUEST_ID.lower())
        pending = service.embed(client, body, request.headers.get("content-type"), request.headers, request_id)
        if isinstance(pending, Answer):
            answer = pending
        else:
            try:
                answer = await asyncio.wrap_future(pending)
            except (ValueError, TypeError) as exc:  # an answer that may not be served: nothing was billed
                raise ServeError(422, str(exc)) from None
        return _respond(answer, fmt, service.ledger.remaining(client.name), request_id)

    @app.get("/v1/receipts/{request_id}", summary="a billed request's answer again, not billed twice")
    async def receipt(request: Request, request_id: str) -> Response:
        client = client_of(request)
        answer = await asyncio.to_thread(service.receipt, client, request_id)
        assert answer is not None
        fmt = (
            wire.media_format(request.headers.get("accept"))
            if request.headers.get("accept") in wire.FORMATS.values()
            else "raw"
        )
        return _respond(answer, fmt, service.ledger.remaining(client.name), request_id)

    return app
