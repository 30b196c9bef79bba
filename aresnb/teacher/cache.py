"""The reply cache: never pay twice for the same Teacher reply, and replay any run exactly.

SQLite in WAL mode (several runs and processes can share one file; a crash loses nothing that
was committed). The key is the sha256 of (model, prompt version, full messages with every image
replaced by the sha256 of its bytes, temperature). Each reply is committed the moment it arrives,
before it is validated, so a killed run resumes without repeating a call that was answered.

A cassette is the whole cache as one JSONL file (one reply per line, sorted by key): export it
after a paid run, import it elsewhere and set ``teacher.replay_only`` to replay offline, exactly.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from .problem import sha256_hex

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,      -- JSON: messages with images as sha256 references, temperature
    reply TEXT NOT NULL,        -- the reply text exactly as received
    usage TEXT NOT NULL,        -- JSON: prompt_tokens, completion_tokens
    created REAL NOT NULL
)
"""


def strip_images(messages: list[dict]) -> list[dict]:
    """Messages with each data URL replaced by ``sha256:<hex of the URL>`` (stable, small)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    part = {"type": "image_url", "image_url": {"url": "sha256:" + sha256_hex(url)}}
                parts.append(part)
            m = {**m, "content": parts}
        out.append(m)
    return out


def request_record(model: str, prompt_version: str, messages: list[dict], temperature: float) -> dict:
    return {"model": model, "prompt_version": prompt_version, "messages": strip_images(messages),
            "temperature": float(temperature)}


def cache_key(record: dict) -> str:
    return sha256_hex(json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")))


class ReplyCache:
    """Thread-safe SQLite reply store. ``get(key)`` / ``put(...)`` / ``export`` / ``import_``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=60000")
        self._db.execute(_SCHEMA)

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT reply, usage FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {"reply": row[0], "usage": json.loads(row[1])}

    def put(self, key: str, record: dict, kind: str, reply: str, usage: dict, created: float | None = None) -> None:
        """Commit one reply now (INSERT OR IGNORE: the first reply for a key wins)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, record["model"], record["prompt_version"], kind,
                 json.dumps(record, sort_keys=True, ensure_ascii=False), reply, json.dumps(usage), time.time() if created is None else created),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def rows(self, keys: Iterable[str] | None = None) -> Iterator[dict]:
        """Every stored reply (or those of ``keys``), sorted by key."""
        sql = "SELECT key, model, prompt_version, kind, request, reply, usage, created FROM replies"
        with self._lock:
            if keys is None:
                rows = self._db.execute(sql + " ORDER BY key").fetchall()
            else:
                keys, rows = sorted(set(keys)), []
                for i in range(0, len(keys), 500):
                    chunk = keys[i:i + 500]
                    rows += self._db.execute(sql + f" WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                rows.sort()
        for key, model, version, kind, request, reply, usage, created in rows:
            yield {"key": key, "model": model, "prompt_version": version, "kind": kind,
                   "request": json.loads(request), "reply": reply, "usage": json.loads(usage), "created": created}

    def export(self, cassette: str | Path, keys: Iterable[str] | None = None, merge: bool = False) -> int:
        """Write replies (all, or those of ``keys``) to a JSONL cassette, atomically.

        ``merge`` keeps the lines already in the file (a run's stages add to one cassette).
        Returns the number of lines written.
        """
        cassette = Path(cassette)
        cassette.parent.mkdir(parents=True, exist_ok=True)
        lines = {}
        if merge and cassette.exists():
            for line in cassette.read_text().splitlines():
                if line.strip():
                    lines[json.loads(line)["key"]] = line
        for row in self.rows(keys):
            lines[row["key"]] = json.dumps(row, sort_keys=True, ensure_ascii=False)
        tmp = cassette.with_suffix(cassette.suffix + ".tmp")
        with open(tmp, "w") as f:
            for key in sorted(lines):
                f.write(lines[key] + "\n")
        tmp.replace(cassette)
        return len(lines)

    def import_(self, cassette: str | Path) -> int:
        """Load a cassette; every line's key is checked against its request. Returns lines added."""
        cassette = Path(cassette)
        if not cassette.exists():
            raise FileNotFoundError(f"teacher.cassette: file not found: {cassette}")
        before = len(self)
        for i, line in enumerate(cassette.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, record = row["key"], row["request"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{cassette}:{i}: not a cassette line ({e})") from None
            if cache_key(record) != key:
                raise ValueError(f"{cassette}:{i}: key does not match its request (edited or corrupt cassette)")
            self.put(key, record, row.get("kind", "?"), row["reply"], row.get("usage", {}), row.get("created"))
        return len(self) - before

    def close(self) -> None:
        with self._lock:
            self._db.close()
