"""What the train/val/test splits must satisfy before anything is built on them.

- A qid in two splits is an error that names the qids: a test problem that is also in train
  leaks its answer into the evaluation. ``data.allow_overlap: true`` accepts it for those who
  mean it (e.g. a deliberate memorisation check).
- A qid listed twice within one split is always an error: every later stage keys problems by qid.
- An empty train split is an error (nothing to fine-tune, sample or correct); an empty val or
  test split is a warning (the stages that need it say so when they run).
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Mapping, Sequence

from .schema import SPLITS, DataError

SHOWN = 20  # qids named in a message; the count says how many more


class EmptySplitWarning(UserWarning):
    """A val or test split without problems."""


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def check_splits(rows_by_split: Mapping[str, Sequence[Mapping]], *, allow_overlap: bool, source: str) -> None:
    """Raise :class:`DataError` for duplicate or overlapping qids and an empty train split; warn
    (:class:`EmptySplitWarning`) for an empty val or test split. ``source`` names the data."""
    qids = {split: [str(r["qid"]) for r in rows_by_split.get(split, [])] for split in SPLITS}
    twice = [f"{q!r} ({split}, {n} times)" for split in SPLITS for q, n in Counter(qids[split]).items() if n > 1]
    if twice:
        raise DataError(f"{source}: {len(twice)} qid(s) listed more than once within a split: {_listed(twice)}")
    where: dict[str, list[str]] = {}
    for split in SPLITS:
        for q in qids[split]:
            where.setdefault(q, []).append(split)
    overlap = [f"{q!r} ({', '.join(s)})" for q, s in where.items() if len(s) > 1]
    if overlap and not allow_overlap:
        raise DataError(
            f"{source}: {len(overlap)} qid(s) appear in more than one split: {_listed(overlap)}. A problem in two "
            "splits leaks between training and evaluation; set data.allow_overlap=true if you mean it")
    if not qids["train"]:
        raise DataError(f"{source}: the train split is empty: there is nothing to train on "
                        "(check the split file, data.max_per_split and data.missing_image=skip)")
    for split in ("val", "test"):
        if not qids[split]:
            warnings.warn(f"{source}: the {split} split is empty: the stages that evaluate on it will have "
                          "nothing to measure", EmptySplitWarning, stacklevel=2)
