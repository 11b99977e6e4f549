"""Sweep results in SQLite: one row per finished cell, committed atomically.

Only the sweep's parent process writes. A cell's row is inserted in a single transaction keyed by
its ``cell_id`` (a hash of the cell's full configuration) under a UNIQUE constraint, so a sweep
killed at any moment leaves either the whole row or nothing: rerunning skips committed cells, reruns
the rest, and never duplicates one. The database runs in WAL mode with ``synchronous=FULL`` so a
committed row survives a SIGKILL (or power loss) of the writer. A database written by an older
version gains the columns it lacks when opened.

Besides ``cells``, a small ``kv`` table holds sweep-level facts computed once (the victim's probe
accuracy, the honest user's) so a resumed sweep reuses them, and ``failures`` keeps every failed
attempt of a cell (its error, where and when), including those a later run retried successfully.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from sslsteal_fast.util.sqlite import connect, transaction

__all__ = ["CELL_COLUMNS", "DETECTION_COLUMNS", "ResultStore"]

#: A detector's columns (NULL under other defenses): both clients' flag rates and its quality.
DETECTION_COLUMNS = (
    "honest_flagged",
    "thief_flagged",
    "detection_precision",
    "detection_recall",
    "detection_f1",
    "detection_roc_auc",
)
# (name, SQL type) of every column of the cells table, in CSV order.
CELL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cell_id", "TEXT NOT NULL UNIQUE"),
    ("loss", "TEXT NOT NULL"),
    ("budget", "INTEGER NOT NULL"),
    ("query_dataset", "TEXT NOT NULL"),
    ("defense", "TEXT NOT NULL"),
    ("seed", "INTEGER NOT NULL"),
    ("arch", "TEXT NOT NULL"),
    ("epochs", "INTEGER NOT NULL"),
    ("strategy", "TEXT NOT NULL"),
    ("probe_top1", "REAL"),
    ("probe_top5", "REAL"),
    ("knn_top1", "REAL"),
    ("honest_top1", "REAL"),
    ("fidelity_cosine", "REAL"),
    ("fidelity_l2", "REAL"),
    ("fidelity_agreement", "REAL"),
    ("billed_queries", "INTEGER NOT NULL"),
    ("cell_forward_passes", "INTEGER NOT NULL"),
    *((name, "REAL") for name in DETECTION_COLUMNS),
    ("steal_time_s", "REAL NOT NULL"),
    ("probe_time_s", "REAL NOT NULL"),
    ("wall_time_s", "REAL NOT NULL"),
    ("final_loss", "REAL"),
    ("node", "TEXT"),
    ("config_json", "TEXT NOT NULL"),
    ("finished_at", "REAL NOT NULL"),
)


class ResultStore:
    """The sweep's ``results.sqlite``. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = connect(self.path, synchronous="FULL")
        self._conn.row_factory = sqlite3.Row
        columns = ",\n  ".join(f"{name} {sqltype}" for name, sqltype in CELL_COLUMNS)
        with transaction(self._conn) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS cells (\n  {columns}\n)")
            conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS failures (cell_id TEXT NOT NULL, node TEXT, error TEXT NOT NULL, "
                "failed_at REAL NOT NULL)"
            )
            have = {row[1] for row in conn.execute("PRAGMA table_info(cells)")}
            for name, sqltype in CELL_COLUMNS:
                if name not in have:  # an older store: add the column, NULL in its old rows
                    conn.execute(f"ALTER TABLE cells ADD COLUMN {name} {sqltype.replace(' NOT NULL', '')}")

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def done_ids(self) -> set[str]:
        """Ids of every committed cell."""
        return {row[0] for row in self._conn.execute("SELECT cell_id FROM cells")}

    def insert_cell(self, row: dict[str, Any]) -> bool:
        """Commit one finished cell; returns False (and changes nothing) if its id is already there.

        ``row`` must have every column of :data:`CELL_COLUMNS` except ``finished_at``.
        """
        names = [name for name, _ in CELL_COLUMNS]
        values = dict(row, finished_at=time.time())
        missing = [n for n in names if n not in values]
        if missing:
            raise KeyError(f"cell row lacks columns {missing}")
        placeholders = ", ".join("?" for _ in names)
        with transaction(self._conn) as conn:
            cur = conn.execute(
                f"INSERT INTO cells ({', '.join(names)}) VALUES ({placeholders}) ON CONFLICT(cell_id) DO NOTHING",
                [values[n] for n in names],
            )
            return cur.rowcount == 1

    def record_failure(self, cell_id: str, error: str, node: str | None = None) -> None:
        """Keep one failed attempt of ``cell_id`` (its traceback or Ray's error), atomically."""
        with transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO failures (cell_id, node, error, failed_at) VALUES (?, ?, ?, ?)",
                (cell_id, node, error, time.time()),
            )

    def failures(self, ids: set[str] | None = None) -> list[dict[str, Any]]:
        """Recorded failed attempts (all, or those of cells in ``ids``), oldest first."""
        rows = [dict(r) for r in self._conn.execute("SELECT * FROM failures ORDER BY rowid")]
        return rows if ids is None else [r for r in rows if r["cell_id"] in ids]

    def cells(self, ids: set[str] | None = None) -> list[dict[str, Any]]:
        """Committed cells (all, or those in ``ids``) as dicts, in insertion order."""
        rows = [dict(r) for r in self._conn.execute("SELECT * FROM cells ORDER BY rowid")]
        return rows if ids is None else [r for r in rows if r["cell_id"] in ids]

    def get(self, key: str) -> Any | None:
        """A JSON value stored with :meth:`put`, or None."""
        row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key`` (replacing), atomically."""
        with transaction(self._conn) as conn:
            conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, json.dumps(value)))
