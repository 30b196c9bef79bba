"""The one problem schema every dataset is converted to, its validation and its categories.

A loader turns raw records (ScienceQA ``problems.json`` entries, A-OKVQA rows, the synthetic
generator's files) into plain dicts with exactly the :data:`COLUMNS`; bad input raises a
:class:`DataError` naming the qid and the file, never a silently wrong row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

SPLITS = ("train", "val", "test")
CATEGORY_COLUMNS = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")

# Every column and its type (a list: a sequence of that type). Plain data, so that importing the
# schema -- as the trainers, generation and the GPU check do through aresnb.data.prompts -- does not
# import ``datasets``: the GPU machine's image has none. Only building a DatasetDict needs it.
COLUMN_TYPES: dict[str, Any] = {
    "qid": "string",
    "question": "string",
    "choices": ["string"],
    "answer": "int64",
    "hint": "string",
    "image": "string",  # absolute path to the image file, "" if none
    "has_image": "bool",
    "caption": "string",
    "lecture": "string",
    "solution": "string",
    "subject": "string",
    "grade": "string",
    "category": "string",
    "topic": "string",
    "skill": "string",
    "task": "string",
    "split": "string",
    "image_record": "string",  # JSON of what a synthetic image shows; "" for real data
    "features_zeroed": "bool",  # referenced image absent, kept with zero features
}
COLUMNS = tuple(COLUMN_TYPES)


def dataset_features() -> Any:
    """The schema as ``datasets.Features``."""
    import datasets  # deferred: see COLUMN_TYPES

    def feature(kind: Any) -> Any:
        return datasets.Sequence(datasets.Value(kind[0])) if isinstance(kind, list) else datasets.Value(kind)

    return datasets.Features({name: feature(kind) for name, kind in COLUMN_TYPES.items()})


class DataError(ValueError):
    """Bad dataset input; the message names the file and, where there is one, the qid."""


def where(qid: str | None, file: str | Path) -> str:
    return f"{file}: problem {qid!r}" if qid is not None else str(file)


def read_json_file(path: str | Path, what: str = "file") -> Any:
    """Read a JSON file or raise a DataError naming it (missing file, malformed JSON)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"missing {what}: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None


def make_problem(raw: dict, *, qid: str, file: str | Path, required: Iterable[str], **fixed: Any) -> dict:
    """Validate a raw record and return a row with every schema column.

    ``required`` keys must be present in ``raw``; ``fixed`` values (split, image path, ...) override
    ``raw``; other columns default to "" / False.
    """
    if not isinstance(raw, dict):
        raise DataError(f"{where(qid, file)}: expected a JSON object, got {type(raw).__name__}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise DataError(f"{where(qid, file)}: missing field(s) {', '.join(missing)}")
    row: dict[str, Any] = {}
    for name in COLUMNS:
        value = fixed[name] if name in fixed else raw.get(name)
        row[name] = _default(name) if value is None else value
    row["qid"] = str(qid)
    for name in ("question", "hint", "caption", "lecture", "solution", "subject", "grade",
                 "category", "topic", "skill", "task", "split", "image", "image_record"):
        if not isinstance(row[name], str):
            raise DataError(f"{where(qid, file)}: field {name!r} must be a string, got {row[name]!r}")
    choices = row["choices"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise DataError(f"{where(qid, file)}: field 'choices' must be a list of at least 2 strings, got {choices!r}")
    answer = row["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise DataError(f"{where(qid, file)}: field 'answer' must be an integer index, got {answer!r}")
    if not 0 <= answer < len(choices):
        raise DataError(f"{where(qid, file)}: answer index {answer} out of range for {len(choices)} choices")
    if not row["question"].strip():
        raise DataError(f"{where(qid, file)}: empty question")
    return row


def _default(name: str) -> Any:
    return False if name in ("has_image", "features_zeroed") else ""


def image_problem(path: str | Path) -> str | None:
    """Why an image file cannot be used ("image not found", "unreadable image ..."), or None.

    ``verify()`` reads the file's structure without decoding the pixels: it catches files that
    are not images at all and most truncated ones, at a fraction of a decode's cost.
    """
    if not Path(path).is_file():
        return f"image not found: {path}"
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, struct.error ...
        return f"unreadable image {path} ({type(e).__name__}: {e})"
    return None


def apply_missing_image(rows: list[dict], policy: str, file: str | Path) -> tuple[list[dict], int, int]:
    """Apply ``data.missing_image`` to rows whose referenced image is absent or unreadable.

    Returns (rows kept, number skipped, number zero-filled). Zero-filled rows keep
    ``has_image`` (the problem *has* an image; it is the IMG category) but get ``image=""`` so
    nothing downstream tries to open it, and ``features_zeroed=True``.
    """
    if policy not in ("error", "skip", "zeros"):
        raise ValueError(f"unknown missing_image policy {policy!r}")
    kept, skipped, zeroed = [], 0, 0
    for row in rows:
        problem = image_problem(row["image"]) if row["has_image"] else None
        if problem is not None:
            if policy == "error":
                raise DataError(
                    f"{where(row['qid'], file)}: {problem} "
                    "(set data.missing_image to 'skip' or 'zeros' to go on without it)"
                )
            if policy == "skip":
                skipped += 1
                continue
            row = {**row, "image": "", "features_zeroed": True}
            zeroed += 1
        kept.append(row)
    return kept, skipped, zeroed


def to_dataset_dict(rows_by_split: dict[str, list[dict]]) -> Any:
    """Rows -> ``datasets.DatasetDict`` with the schema's features, splits in train/val/test order."""
    import datasets  # deferred: see COLUMN_TYPES

    features = dataset_features()
    out = {}
    for split in SPLITS:
        rows = rows_by_split.get(split, [])
        out[split] = datasets.Dataset.from_list(rows, features=features) if rows else \
            datasets.Dataset.from_dict({k: [] for k in COLUMNS}, features=features)
    return datasets.DatasetDict(out)


def grade_number(grade: str) -> int | None:
    digits = "".join(ch for ch in str(grade) if ch.isdigit())
    return int(digits) if digits else None


def categories(problem: dict) -> list[str]:
    """ScienceQA's accuracy columns a problem counts in (subset of NAT SOC LAN TXT IMG NO G1-6 G7-12)."""
    cats = []
    subject = str(problem.get("subject", "")).lower()
    if subject.startswith("natural"):
        cats.append("NAT")
    elif subject.startswith("social"):
        cats.append("SOC")
    elif subject.startswith("language"):
        cats.append("LAN")
    has_text = bool(str(problem.get("hint", "")).strip())
    has_image = bool(problem.get("has_image")) or bool(problem.get("image"))
    if has_text:
        cats.append("TXT")
    if has_image:
        cats.append("IMG")
    if not has_text and not has_image:
        cats.append("NO")
    g = grade_number(problem.get("grade", ""))
    if g is not None:
        cats.append("G1-6" if g <= 6 else "G7-12")
    return cats


def category_counts(ds: Any) -> dict[str, dict[str, int]]:
    """{split: {category: count, ..., "total": n}} over every category column."""
    out = {}
    for split in ds:
        counts = {c: 0 for c in CATEGORY_COLUMNS}
        cols = ds[split]
        rows = cols.to_list() if hasattr(cols, "to_list") else list(cols)
        for row in rows:
            for c in categories(row):
                counts[c] += 1
        counts["total"] = len(rows)
        out[split] = counts
    return out
