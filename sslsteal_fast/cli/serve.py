"""``sslsteal serve`` (the victim as an HTTP encoder API) and ``sslsteal keys add|list`` (its clients)."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from sslsteal_fast.cli.common import add_command, emit, info

__all__ = ["register"]

_MAX_BATCH, _MAX_WAIT_MS, _MAX_ROWS, _MAX_BODY_MB, _RECEIPTS, _CACHE = 256, 5.0, 4096, 64.0, 64, 16384


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``keys`` to the ``sslsteal`` parser."""
    p = add_command(
        subparsers,
        _cmd_serve,
        epilog="example: sslsteal keys add --state api --client alice --budget 10000 && "
        "sslsteal serve victim.onnx --state api --port 8000",
    )
    p.add_argument("model", type=Path, metavar="VICTIM.onnx", help="the encoder to serve (sslsteal export)")
    p.add_argument(
        "--state",
        required=True,
        type=Path,
        metavar="DIR",
        help="the server's state: keys, bills, receipts, defense state (one server per folder)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: a free one; the URL is printed)")
    g = p.add_argument_group("batching")
    g.add_argument("--max-batch", type=int, default=_MAX_BATCH, help="most rows in one ONNX Runtime batch")
    g.add_argument(
        "--max-wait-ms",
        type=float,
        default=_MAX_WAIT_MS,
        help="longest the model, once free, waits for more requests to fill a batch, in milliseconds",
    )
    g.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: physical cores)")
    g.add_argument("--cache-size", type=int, default=_CACHE, help="rows the response cache keeps (0: no cache)")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-rows", type=int, default=_MAX_ROWS, help="most images in one request (more: 413)")
    lim.add_argument("--max-body-mb", type=float, default=_MAX_BODY_MB, help="largest request body in MiB (more: 413)")
    lim.add_argument(
        "--receipts",
        type=int,
        default=_RECEIPTS,
        help="answers kept per key for clients whose connection broke (GET /v1/receipts/ID)",
    )
    p.add_argument("--access-log", action="store_true", help="log every request on stderr (never the key)")

    k = add_command(subparsers, _cmd_keys)
    sub = k.add_subparsers(dest="keys_command", metavar="{add,list}", help="add a key, or list the keys")
    a = add_command(sub, _cmd_add, epilog="example: sslsteal keys add --state api --client alice --budget 10000")
    a.add_argument("--state", required=True, type=Path, metavar="DIR", help="the server's state folder")
    a.add_argument("--client", required=True, metavar="NAME", help="the client the key bills")
    a.add_argument(
        "--budget", required=True, type=int, metavar="N", help="the most queries (rows) the key may be billed"
    )
    a.add_argument(
        "--defense",
        action="append",
        default=None,
        metavar="SPEC",
        help="serve this client through a defense, NAME[:KEY=VALUE,...] (noise:sigma=0.5, detection:threshold=0.6, "
        "coverage:lam=1, ...); repeat to stack defenses, applied in order",
    )
    a.add_argument("--rate-limit", type=float, default=None, metavar="QPS", help="most queries (rows) per second")
    ls = add_command(sub, _cmd_list)
    ls.add_argument("--state", required=True, type=Path, metavar="DIR", help="the server's state folder")


def _cmd_serve(args: argparse.Namespace) -> int:
    """Serve an ONNX encoder as an HTTP API with keys, budgets, defenses and dynamic batching.

    Serve VICTIM.onnx on HOST:PORT (127.0.0.1 by default) with FastAPI on uvicorn: POST /v1/embed
    (images as raw bytes with X-Shape/X-Dtype, .npy or JSON+base64; the answer in the same format),
    GET /v1/usage, GET /v1/model, GET /v1/receipts/ID, GET /healthz, docs at /docs. The first line on
    stdout is the URL it listens on. Clients need a key (sslsteal keys add); each is billed exactly
    on the in-process victim's rules, durably in --state, so a crash loses no bill and bills no
    answer that was not committed. Concurrent requests are batched together (--max-batch rows,
    waiting at most --max-wait-ms). Stop it with Ctrl-C or SIGTERM.
    """
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.serve import require_serve_extra

    require_serve_extra()  # a missing extra is one line saying what to install (exit 2)
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.serve.server import serve
    from sslsteal_fast.serve.service import Service, check_limits

    if not args.model.is_file():
        raise FileNotFoundError(f"{args.model}: no such ONNX file (export one with `sslsteal export`)")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    limits = check_limits(args.max_rows, args.max_body_mb, args.receipts)
    service = Service(
        args.model,
        args.state,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        limits=limits,
        cache_size=args.cache_size,
        threads=args.threads,
    )
    info(
        args,
        f"sslsteal serve: {args.model} ({service.victim.input_shape} -> {service.victim.output_dim}), state {args.state}",
    )
    serve(service, args.host, args.port, access_log=args.access_log)
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    """Create and list the API's keys: keys add, keys list.

    A key is shown once, when it is made (keys add prints it on stdout); the state keeps only its
    hash. keys list shows clients, budgets and usage, never keys.
    """
    print("sslsteal keys: error: choose a subcommand: add or list (see: sslsteal keys --help)", file=sys.stderr)
    return 2


def _cmd_add(args: argparse.Namespace) -> int:
    """Create a client's API key and print it (the only time it is shown).

    Create the key of client NAME with a budget of N queries (rows), optional defenses (each
    client's own state) and an optional rate limit, in the server state --state (a running server
    sees it at the client's first request). The key alone is printed on stdout; store it (e.g. in a
    key file for sslsteal steal --key-file).
    """
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.serve import ServerState

    with ServerState(args.state) as state:
        key = state.add_key(args.client, args.budget, args.defense or (), args.rate_limit)
    info(args, f"sslsteal keys add: client {args.client!r}, budget {args.budget}; the key is shown only now")
    result = {"client": args.client, "budget": args.budget, "defenses": args.defense or [], "key": key}
    emit(args, result, key)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    """List the API's clients with their budgets and usage (never their keys)."""
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.serve import ServerState

    if not (args.state / "server.sqlite").is_file():
        raise FileNotFoundError(f"--state {args.state}: no server state here (sslsteal keys add creates one)")
    with ServerState(args.state) as state:
        rows = []
        for r in state.records():
            used = state.usage(r.client)
            remaining = None if r.budget is None else max(0, r.budget - used["billed"])
            rows.append(
                {
                    "client": r.client,
                    "budget": r.budget,
                    "billed": used["billed"],
                    "remaining": remaining,
                    "requests": used["requests"],
                    "rate_limit": r.rate_limit,
                    "defenses": list(r.defenses),
                    "created": datetime.datetime.fromtimestamp(r.created, datetime.timezone.utc).isoformat(
                        timespec="seconds"
                    ),
                }
            )

    def table() -> str:
        lines = [
            "| client | budget | billed | remaining | requests | rate limit | defenses | created |",
            "|---|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in rows:
            limit = "-" if r["rate_limit"] is None else f"{r['rate_limit']:g}/s"
            defenses = ", ".join(r["defenses"]) or "none"
            lines.append(
                f"| {r['client']} | {r['budget']} | {r['billed']} | {r['remaining']} | {r['requests']} | {limit} "
                f"| {defenses} | {r['created']} |"
            )
        return "\n".join(lines) if rows else "no keys"

    emit(args, {"state": str(args.state), "clients": rows}, table)
    return 0
