"""Small file helpers every layer uses: atomic JSON, append-and-flush JSONL.

Nothing here knows where a run keeps its files (that is :mod:`aresnb.paths`); these functions
take whatever path they are given.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def jsonable(obj: Any) -> Any:
    """numpy / torch scalars and Paths -> plain JSON; NaN/inf -> None (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(jsonable(obj), f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: str | Path, rows: dict | list[dict]) -> None:
    """Append one row (or several, in one write) and flush: what was written survives a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [rows] if isinstance(rows, dict) else rows
    with open(path, "a") as f:
        f.write("".join(json.dumps(jsonable(row)) + "\n" for row in rows))
        f.flush()


def read_jsonl(path: str | Path, tolerate_partial_last_line: bool = False) -> list[dict]:
    """Every row of a JSONL file; [] when the file does not exist.

    ``tolerate_partial_last_line`` drops a last line a kill cut in half (files grown by
    :func:`append_jsonl`); any other malformed line is an error naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().split("\n") if line.strip()]
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if tolerate_partial_last_line and i == len(lines):
                break
            raise ValueError(f"{path}:{i}: not a JSON line ({e.msg})") from None
    return rows


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    """Write rows as JSONL atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(jsonable(row)) + "\n")
    os.replace(tmp, path)
    return path
