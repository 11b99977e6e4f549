"""The HTTP encoder API under load: a real ``sslsteal serve`` process on 127.0.0.1 against in-process OnnxVictim.

Measured side by side in one run:

* **Throughput and latency.** ResNet-18 at 32x32 (exported with the package's ``export_onnx``)
  served to 1, 8 and 64 concurrent clients sending batches of 1, 16 and 256 uint8 images (one
  keep-alive connection each, driven by a minimal asyncio HTTP/1.1 client in this process), against in-process
  ``OnnxVictim.query`` at batch 256 timed just before and just after each load (the mean of the
  two is that load's reference, so a shared machine's changing load hits both alike). Images/s, p50 and p99 request latency, and the ratio
  server / in-process per round (median over rounds). Both sides run with the response cache off
  (``--cache-size 0``), so every image is a model run.
* **Billing under load.** Keys with budgets that run out mid-test, each raced by several
  ``HttpVictim`` clients sending requests of 1 to 16 rows until the budget is spent: the bill of
  every key must equal the rows its clients received, exactly, and never pass its budget.
* **Crash.** Clients load the server, it is SIGKILLed mid-load and restarted on the same port; the
  clients (``HttpVictim``: retries on connection errors, asks for receipts before sending a request
  again) carry on. The usage each key reports must equal what its clients received.

    PYTHONPATH=. python benchmarks/bench_http.py [--quick] [--rounds 3] [--clients 1 8 64] [--batches 1 16 256]
        [--out FILE.md] [--json FILE]

Exits 1 if a billing check fails. ``--quick`` (the test suite's smoke test) serves the small
encoder at 16x16 to 1 and 8 clients with short loads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from common import machine, markdown_table

from sslsteal_fast.models import build_encoder
from sslsteal_fast.serve import ServerState
from sslsteal_fast.serve.process import ServerProcess
from sslsteal_fast.victim import BudgetExceeded, HttpVictim, OnnxVictim, export_onnx, physical_cores, wire


def export(arch: str, size: int, folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / f"{arch}_{size}.onnx"
    export_onnx(build_encoder(arch).eval(), path, (3, size, size), arch=arch)
    return path


def in_process(victim: OnnxVictim, shape: tuple[int, ...], seconds: float, rng: np.random.Generator) -> float:
    """Images/s of ``OnnxVictim.query`` at batch 256 over about ``seconds`` (after one warm-up batch)."""
    victim.query(rng.integers(0, 256, (256, *shape), dtype=np.uint8))
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 512:
        victim.query(rng.integers(0, 256, (256, *shape), dtype=np.uint8))
        done += 256
    return done / (time.perf_counter() - start)


class _Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: the load generator's, so that the client's
    own cost stays small next to the server's (httpx's async pool slows down with many connections)."""

    def __init__(self, url: str, key: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.key = host, int(port), key

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        head = ["POST /v1/embed HTTP/1.1", f"Host: {self.host}:{self.port}", f"Authorization: Bearer {self.key}"]
        head += [f"{k}: {v}" for k, v in headers.items()] + [f"Content-Length: {len(body)}", "", ""]
        self.writer.write("\r\n".join(head).encode() + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        return status, fields, await self.reader.readexactly(int(fields["content-length"]))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def _load(url: str, key: str, clients: int, batch: int, shape: tuple[int, ...], seconds: float) -> dict:
    """``clients`` connections each sending ``batch`` images per request until ``seconds`` passed."""
    rng = np.random.default_rng(clients * 1000 + batch)
    bodies = [wire.encode(rng.integers(0, 256, (batch, *shape), dtype=np.uint8)) for _ in range(4)]
    latencies: list[float] = []
    images = 0
    connections = [_Connection(url, key) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in connections))

    async def client(i: int) -> None:
        nonlocal images
        n = 0
        while time.perf_counter() - start < seconds or n == 0:
            body, headers = bodies[(i + n) % len(bodies)]
            t = time.perf_counter()
            status, fields, _ = await connections[i].post(body, headers)
            latencies.append(time.perf_counter() - t)
            if status != 200 or int(fields["x-billed"]) != batch:
                raise RuntimeError(f"load request failed: {status}")
            images += batch
            n += 1

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - start
    await asyncio.gather(*(c.close() for c in connections))
    return {"images": images, "wall": wall, "latencies": latencies}


def throughput(server: ServerProcess, key: str, args: argparse.Namespace, shape: tuple[int, ...], model: Path):
    victim = OnnxVictim(model, batch_size=256, cache_size=0)
    rng = np.random.default_rng(0)
    loads = [(c, b) for c in args.clients for b in args.batches]
    rows: dict[tuple[int, int], dict[str, list[float]]] = {lb: {"ips": [], "ratio": [], "lat": []} for lb in loads}
    base: list[float] = []
    asyncio.run(_load(server.url, key, 2, 16, shape, 0.5))  # warm the server up
    for r in range(args.rounds):
        for c, b in loads:
            before = in_process(victim, shape, args.seconds / 4, rng)
            got = asyncio.run(_load(server.url, key, c, b, shape, args.seconds))
            ref = (before + in_process(victim, shape, args.seconds / 4, rng)) / 2  # around the load
            base.append(ref)
            ips = got["images"] / got["wall"]
            rows[(c, b)]["ips"].append(ips)
            rows[(c, b)]["ratio"].append(ips / ref)
            rows[(c, b)]["lat"] += got["latencies"]
            print(
                f"  round {r + 1}: {c:3d} clients x batch {b:3d}: {ips:8.1f} img/s (in-process {ref:6.1f}; "
                f"{ips / ref:.2f}x)",
                file=sys.stderr,
            )
    table = []
    for (c, b), v in rows.items():
        lat = np.array(v["lat"]) * 1e3
        table.append(
            {
                "clients": c,
                "batch": b,
                "images_per_s": statistics.median(v["ips"]),
                "ratio": statistics.median(v["ratio"]),
                "ratio_range": [min(v["ratio"]), max(v["ratio"])],
                "p50_ms": float(np.percentile(lat, 50)),
                "p99_ms": float(np.percentile(lat, 99)),
                "requests": len(lat),
            }
        )
    return table, statistics.median(base)


def billing_under_load(url: str, keys: dict[str, str], budgets: dict[str, int], per_key: int) -> list[dict]:
    """Clients race every key's budget with requests of 1-16 rows; returns per key: budget, billed, received."""
    received = dict.fromkeys(keys, 0)
    refusals = dict.fromkeys(keys, 0)
    lock = threading.Lock()
    shape = HttpVictim(url, next(iter(keys.values()))).input_shape

    def race(name: str, seed: int) -> None:
        rng = random.Random(seed)
        with HttpVictim(url, keys[name]) as victim:
            size = rng.randint(1, 16)
            while True:
                x = np.random.default_rng(seed).integers(0, 256, (size, *shape), dtype=np.uint8)
                try:
                    out = victim.query(x)
                except BudgetExceeded as exc:
                    with lock:
                        refusals[name] += 1
                    if exc.remaining == 0:
                        return
                    size = rng.randint(1, exc.remaining)  # what is left still races the other clients
                    continue
                assert out.shape[0] == size
                with lock:
                    received[name] += size
                size = rng.randint(1, 16)
                seed += 1

    threads = [threading.Thread(target=race, args=(n, 100 * i + j)) for i, n in enumerate(keys) for j in range(per_key)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = []
    for name, key in keys.items():
        with HttpVictim(url, key) as victim:
            usage = victim.usage()
        out.append(
            {
                "key": name,
                "budget": budgets[name],
                "billed": usage["billed"],
                "received": received[name],
                "refused_402": refusals[name],
                "ok": usage["billed"] == received[name] == budgets[name],
            }
        )
    return out


def crash(server: ServerProcess, keys: dict[str, str], per_key: int, target: int, restart: Any) -> dict:
    """SIGKILL ``server`` under load, ``restart(port)`` it; usage against what clients received."""
    port = server.port
    received = dict.fromkeys(keys, 0)
    replayed = dict.fromkeys(keys, 0)
    lock = threading.Lock()
    shape = HttpVictim(server.url, next(iter(keys.values()))).input_shape

    def load(name: str, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with HttpVictim(server.url, keys[name], retries=12, backoff=0.25) as victim:
            mine = 0
            while mine < target:
                victim.query(rng.integers(0, 256, (16, *shape), dtype=np.uint8))
                mine += 16
                with lock:
                    received[name] += 16
            with lock:
                replayed[name] += victim.replayed

    threads = [threading.Thread(target=load, args=(n, 100 * i + j)) for i, n in enumerate(keys) for j in range(per_key)]
    for t in threads:
        t.start()
    while sum(received.values()) < target * len(threads) // 3:
        time.sleep(0.01)
    server.kill()
    at_kill = sum(received.values())
    t = time.perf_counter()
    restarted = restart(port)
    restart_s = time.perf_counter() - t
    for th in threads:
        th.join()
    rows = []
    for name, key in keys.items():
        with HttpVictim(restarted.url, key) as victim:
            rows.append({"key": name, "billed": victim.usage()["billed"], "received": received[name]})
    restarted.stop()
    return {
        "keys": rows,
        "received_at_kill": at_kill,
        "restart_s": restart_s,
        "answers_from_receipts": sum(replayed.values()),
        "ok": all(r["billed"] == r["received"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small encoder, short loads (the smoke test)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each load")
    parser.add_argument("--clients", type=int, nargs="+", default=None, help="concurrent clients (default 1 8 64)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="images per request (default 1 16 256)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    arch, size = ("small", 16) if args.quick else ("resnet18", 32)
    args.clients = args.clients or ([1, 8] if args.quick else [1, 8, 64])
    args.batches = args.batches or ([1, 16] if args.quick else [1, 16, 256])
    if args.quick:
        args.rounds, args.seconds = 1, 0.5
    shape = (3, size, size)
    serve_args = ["--max-batch", "256", "--max-wait-ms", "5", "--cache-size", "0"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = export(arch, size, folder)
        state = folder / "api"
        budgets = {f"k{i}": b for i, b in enumerate([97, 250, 401] if args.quick else [997, 1500, 2003, 2500])}
        with ServerState(state) as s:  # one state: the load's key, the budgets that run out, the crash's keys
            key = s.add_key("load", None)
            bkeys = {n: s.add_key(n, b) for n, b in budgets.items()}
            ckeys = {f"c{i}": s.add_key(f"c{i}", None) for i in range(2 if args.quick else 4)}
        print(f"bench_http: {arch} {size}x{size}, {machine()}", file=sys.stderr)
        server = ServerProcess(model, state, *serve_args)
        try:
            table, base = throughput(server, key, args, shape, model)
            billing = billing_under_load(server.url, bkeys, budgets, per_key=3 if args.quick else 6)
            crashed = crash(
                server,
                ckeys,
                2 if args.quick else 4,
                96 if args.quick else 480,
                lambda port: ServerProcess(model, state, *serve_args, port=port),
            )
        finally:
            server.stop()

    lines = [
        f"HTTP API, {arch} {size}x{size}, {machine()}; onnxruntime {ort.__version__}, {physical_cores()} physical "
        f"cores; server: `--max-batch 256 --max-wait-ms 5 --cache-size 0`; {args.rounds} rounds of "
        f"{args.seconds:g} s loads, medians. In-process OnnxVictim at batch 256: {base:.1f} img/s (median).",
        "",
        markdown_table(
            ["clients", "batch", "img/s", "server / in-process (range)", "p50 ms", "p99 ms", "requests"],
            [
                [
                    r["clients"],
                    r["batch"],
                    r["images_per_s"],
                    f"{r['ratio']:.2f} ({r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f})",
                    r["p50_ms"],
                    r["p99_ms"],
                    r["requests"],
                ]
                for r in table
            ],
        ),
        "",
        "Billing under load (budgets run out mid-test):",
        "",
        markdown_table(
            ["key", "budget", "billed", "rows received", "402 refusals", "exact"],
            [[b["key"], b["budget"], b["billed"], b["received"], b["refused_402"], b["ok"]] for b in billing],
        ),
        "",
        f"Crash: SIGKILL after {crashed['received_at_kill']} rows received, restarted in {crashed['restart_s']:.1f} s; "
        f"{crashed['answers_from_receipts']} answers recovered from receipts.",
        "",
        markdown_table(
            ["key", "usage billed", "rows received", "equal"],
            [[c["key"], c["billed"], c["received"], c["billed"] == c["received"]] for c in crashed["keys"]],
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    ok = all(b["ok"] for b in billing) and crashed["ok"]
    if args.json is not None:
        doc: dict[str, Any] = {"model": f"{arch} {size}x{size}", "machine": machine(), "in_process_b256": base}
        doc.update(throughput=table, billing=billing, crash=crashed, ok=ok)
        args.json.write_text(json.dumps(doc, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
