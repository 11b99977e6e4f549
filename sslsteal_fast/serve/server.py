"""Run the encoder API under uvicorn: bind, print the URL (the first line on stdout), serve until stopped."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from sslsteal_fast.serve.app import create_app
from sslsteal_fast.serve.service import Service

__all__ = ["bind", "serve", "url_of"]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    service: Service,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    access_log: bool = False,
    announce: Callable[[str], Any] | None = None,
) -> None:
    """Serve ``service`` until SIGINT or SIGTERM (then finish the admitted requests and close it).

    ``announce(url)`` is called once the socket listens (default: print it as a line on stdout).
    """
    try:
        sock = bind(host, port)
    except BaseException:
        service.close()
        raise
    url = url_of(sock)
    if announce is None:
        print(url, flush=True)
    else:
        announce(url)
    logging.getLogger("sslsteal_fast.serve").info("serving %s on %s", service.victim.path, url)
    config = uvicorn.Config(
        create_app(service),
        log_level="info",
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=30,
        h11_max_incomplete_event_size=64 * 1024,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
