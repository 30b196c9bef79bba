"""``aresnb teacher-cache stats|export|purge-invalid [--path P]``: the user's own reply cache.

- ``stats``: answers by kind (and how many are repaired replies), attempts by status and kind,
  and the USD paid for them, as JSON.
- ``export``: the valid answers as a JSONL cassette (``--out``; ``--attempts`` also writes the
  attempt log, invalid replies with their errors included, beside it).
- ``purge-invalid``: answers that fail today's validation (a cache written before answers were
  validated) leave the answer table for the attempt log, marked invalid: they are kept for the
  record and are never served again. Valid answers are never touched; no command here deletes one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cache import ReplyCache
from .validation import check_answer


def resolve_path(path: str | None, params: str | None) -> Path:
    if path:
        return Path(path)
    from ..config import load_config  # light: YAML and dataclasses
    from .facade import cache_path

    return cache_path(load_config(params))


def purge_invalid(cache: ReplyCache) -> dict:
    """Move every answer that fails validation to the attempt log; returns counts by kind."""
    moved: dict[str, int] = {}
    checked = 0
    for row in list(cache.rows()):
        checked += 1
        error = check_answer(row["kind"], row["request"].get("messages", []), row["reply"])
        if error is not None:
            cache.demote(row["key"], error)
            moved[row["kind"]] = moved.get(row["kind"], 0) + 1
    return {"checked": checked, "moved_to_attempts": sum(moved.values()), "by_kind": moved}


def main(args: argparse.Namespace) -> int:
    path = resolve_path(args.path, args.params)
    if not path.exists():
        print(f"aresnb teacher-cache: no cache at {path} (--path)", file=sys.stderr)
        return 2
    cache = ReplyCache(path)
    try:
        if args.action == "stats":
            print(json.dumps(cache.stats(), indent=1, sort_keys=True))
        elif args.action == "export":
            out = Path(args.out or path.with_suffix(".cassette.jsonl"))
            n = cache.export(out)
            print(f"{n} valid answers -> {out}")
            if args.attempts:
                log = out.with_suffix(".attempts.jsonl")
                rows = list(cache.attempts())
                log.write_text("".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows))
                print(f"{len(rows)} attempts -> {log}")
        elif args.action == "purge-invalid":
            print(json.dumps(purge_invalid(cache), sort_keys=True))
    finally:
        cache.close()
    return 0
