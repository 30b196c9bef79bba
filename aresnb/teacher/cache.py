"""The reply cache: never pay twice for the same Teacher reply, never serve a broken one.

SQLite in WAL mode (several runs and processes can share one file; a crash loses nothing that
was committed). Two tables:

- ``attempts``: every reply that came back from the endpoint, committed the moment it arrives
  (its text, usage, cost and the run it was paid by), then marked ``valid`` or ``invalid`` (with
  the validation error) once checked. Nothing paid is lost: a run killed between arrival and
  validation finds the ``pending`` attempt on its re-run and checks it instead of asking again.
  The run's spend (``teacher.max_cost_usd``) is summed from here.
- ``replies``: the answers, i.e. only replies that passed validation; for a request whose reply
  was invalid but whose one repair passed, the repaired reply (``repaired = 1``). Only these are
  ever served from the cache, so an invalid reply is asked again on a re-run.

The key is the sha256 of (model, prompt version, full messages with every image replaced by the
sha256 of its bytes, temperature, response format). The response format is part of the key: a
reply constrained by a JSON schema and one written freely are different requests with different
replies (and different bodies on the wire), so a cassette replays exactly what was sent.

A cassette is the answer table as one JSONL file (one reply per line, sorted by key): export it
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
    request TEXT NOT NULL,      -- JSON: messages with images as sha256 references, temperature, format
    reply TEXT NOT NULL,        -- the reply text exactly as received (a valid one)
    usage TEXT NOT NULL,        -- JSON: prompt_tokens, completion_tokens
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,          -- the request's key (a repair request has its own)
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    reply TEXT NOT NULL,
    usage TEXT NOT NULL,
    cost_usd REAL NOT NULL,
    scope TEXT,                 -- the run that paid for it (its folder), for the run's spend
    status TEXT NOT NULL,       -- pending | valid | invalid
    error TEXT,                 -- why it was invalid
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_key ON attempts (key, status);
CREATE INDEX IF NOT EXISTS attempts_scope ON attempts (scope);
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


def request_record(model: str, prompt_version: str, messages: list[dict], temperature: float,
                   response_format: dict | None = None) -> dict:
    record = {"model": model, "prompt_version": prompt_version, "messages": strip_images(messages),
              "temperature": float(temperature)}
    if response_format is not None:  # absent for 'none': keys of caches written before formats existed still match
        record["response_format"] = response_format
    return record


def _dumps(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


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
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(replies)")}
        if "repaired" not in columns:  # a cache written before repaired replies were kept
            self._db.execute("ALTER TABLE replies ADD COLUMN repaired INTEGER NOT NULL DEFAULT 0")

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT reply, usage FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {"reply": row[0], "usage": json.loads(row[1])}

    def put(self, key: str, record: dict, kind: str, reply: str, usage: dict, created: float | None = None,
            repaired: bool = False) -> None:
        """Commit one valid reply as the answer to ``key`` (INSERT OR IGNORE: the first answer wins)."""
        with self._lock:
            self._insert_answer(key, record, kind, reply, usage, created, repaired)

    def _insert_answer(self, key: str, record: dict, kind: str, reply: str, usage: dict, created: float | None = None,
                       repaired: bool = False) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO replies (key, model, prompt_version, kind, request, reply, usage, created, repaired)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, record["model"], record["prompt_version"], kind, _dumps(record), reply, json.dumps(usage),
             time.time() if created is None else created, int(repaired)))

    # ---- the attempt log ----------------------------------------------------------------
    def record_attempt(self, key: str, record: dict, kind: str, reply: str, usage: dict, cost_usd: float,
                       scope: str | None) -> int:
        """Commit a reply the moment it arrives (status ``pending``); returns its attempt id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO attempts (key, kind, request, reply, usage, cost_usd, scope, status, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                (key, kind, _dumps(record), reply, json.dumps(usage), float(cost_usd), scope, time.time()))
            return int(cur.lastrowid)

    def pending_attempt(self, key: str) -> dict | None:
        """The latest reply to ``key`` that arrived but was never checked (its run was killed)."""
        with self._lock:
            row = self._db.execute("SELECT id, reply, usage FROM attempts WHERE key = ? AND status = 'pending' "
                                   "ORDER BY id DESC LIMIT 1", (key,)).fetchone()
        return None if row is None else {"attempt_id": row[0], "reply": row[1], "usage": json.loads(row[2])}

    def pending_keys(self) -> set[str]:
        """Keys with a reply that arrived but was never checked (runs killed in between)."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT DISTINCT key FROM attempts WHERE status = 'pending'")}

    def settle(self, attempt_id: int | None, error: str | None = None, answer: dict | None = None) -> None:
        """Mark an attempt ``valid`` (error None) or ``invalid`` with the validation error and, in the
        same transaction, store ``answer`` (the keyword arguments of :meth:`put`) as an answer."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if attempt_id is not None:
                    self._db.execute("UPDATE attempts SET status = ?, error = ? WHERE id = ?",
                                     ("valid" if error is None else "invalid", error, attempt_id))
                if answer is not None:
                    self._insert_answer(**answer)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def demote(self, key: str, error: str) -> None:
        """Move an answer that fails validation (a cache from before validation gated it) to the
        attempt log as ``invalid``: it is kept for the record, never served again."""
        with self._lock:
            row = self._db.execute("SELECT kind, request, reply, usage, created FROM replies WHERE key = ?", (key,)).fetchone()
            if row is None:
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO attempts (key, kind, request, reply, usage, cost_usd, scope, status, error, created)"
                    " VALUES (?, ?, ?, ?, ?, 0.0, NULL, 'invalid', ?, ?)", (key, row[0], row[1], row[2], row[3], error, row[4]))
                self._db.execute("DELETE FROM replies WHERE key = ?", (key,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def spend(self, scope: str) -> float:
        """USD paid so far by the run ``scope`` (every attempt that came back, valid or not)."""
        with self._lock:
            return float(self._db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM attempts WHERE scope = ?",
                                          (scope,)).fetchone()[0])

    def attempts(self, status: str | None = None) -> Iterator[dict]:
        """The attempt log (or the attempts of one status), oldest first."""
        sql = "SELECT id, key, kind, request, reply, usage, cost_usd, scope, status, error, created FROM attempts"
        with self._lock:
            rows = self._db.execute(sql + (" WHERE status = ?" if status else "") + " ORDER BY id",
                                    (status,) if status else ()).fetchall()
        for r in rows:
            yield {"id": r[0], "key": r[1], "kind": r[2], "request": json.loads(r[3]), "reply": r[4],
                   "usage": json.loads(r[5]), "cost_usd": r[6], "scope": r[7], "status": r[8], "error": r[9],
                   "created": r[10]}

    def stats(self) -> dict:
        """Answers by kind (and how many are repaired replies), attempts by status and kind, total cost."""
        with self._lock:
            answers = dict(self._db.execute("SELECT kind, COUNT(*) FROM replies GROUP BY kind").fetchall())
            repaired = self._db.execute("SELECT COUNT(*) FROM replies WHERE repaired = 1").fetchone()[0]
            by_status: dict[str, dict[str, int]] = {}
            for status, kind, n in self._db.execute("SELECT status, kind, COUNT(*) FROM attempts GROUP BY status, kind"):
                by_status.setdefault(status, {})[kind] = n
            cost = self._db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM attempts").fetchone()[0]
        return {"path": str(self.path), "answers": sum(answers.values()), "answers_by_kind": answers,
                "repaired_answers": repaired,
                "attempts": {s: sum(k.values()) for s, k in by_status.items()}, "attempts_by_status_and_kind": by_status,
                "paid_usd": round(float(cost), 6)}

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def rows(self, keys: Iterable[str] | None = None) -> Iterator[dict]:
        """Every stored reply (or those of ``keys``), sorted by key."""
        sql = "SELECT key, model, prompt_version, kind, request, reply, usage, created, repaired FROM replies"
        with self._lock:
            if keys is None:
                rows = self._db.execute(sql + " ORDER BY key").fetchall()
            else:
                keys, rows = sorted(set(keys)), []
                for i in range(0, len(keys), 500):
                    chunk = keys[i:i + 500]
                    rows += self._db.execute(sql + f" WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                rows.sort()
        for key, model, version, kind, request, reply, usage, created, repaired in rows:
            yield {"key": key, "model": model, "prompt_version": version, "kind": kind,
                   "request": json.loads(request), "reply": reply, "usage": json.loads(usage), "created": created,
                   "repaired": bool(repaired)}

    def export(self, cassette: str | Path, keys: Iterable[str] | None = None, merge: bool = False) -> int:
        """Write answers (all, or those of ``keys``) to a JSONL cassette, atomically.

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
            self.put(key, record, row.get("kind", "?"), row["reply"], row.get("usage", {}), row.get("created"),
                     repaired=bool(row.get("repaired", False)))
        return len(self) - before

    def close(self) -> None:
        with self._lock:
            self._db.close()
