"""ScienceQA: from a directory in the original layout, or from the hub copy.

Original layout (Lu et al. 2022)::

    <dir>/problems.json      {qid: {question, choices, answer, hint, image, task, grade, subject,
                                    topic, category, skill, lecture, solution, split}}
    <dir>/pid_splits.json    {"train": [qid, ...], "val": [...], "test": [...], "minival": ...}
    <dir>/captions.json      {"captions": {qid: text}}          (optional)
    <dir>/images/<split>/<qid>/image.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from .schema import SPLITS, DataError, apply_missing_image, make_problem, read_json_file

HUB_ID = "derek-thomas/ScienceQA"
REQUIRED = ("question", "choices", "answer", "hint", "image", "subject", "grade", "lecture", "solution")
HUB_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def load_scienceqa_dir(path: str | Path, missing_image: str = "error") -> tuple[dict[str, list[dict]], dict]:
    """Read a ScienceQA directory -> ({split: rows}, {"skipped": n, "zero_filled": n})."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"ScienceQA directory not found: {root} (data.path)")
    problems_file, splits_file, captions_file = root / "problems.json", root / "pid_splits.json", root / "captions.json"
    problems = read_json_file(problems_file, "ScienceQA problems file")
    pid_splits = read_json_file(splits_file, "ScienceQA split file")
    if not isinstance(problems, dict):
        raise DataError(f"{problems_file}: expected an object {{qid: problem}}, got {type(problems).__name__}")
    if not isinstance(pid_splits, dict):
        raise DataError(f"{splits_file}: expected an object {{split: [qid, ...]}}, got {type(pid_splits).__name__}")
    captions: dict[str, Any] = {}
    if captions_file.exists():
        raw_captions = read_json_file(captions_file, "captions file")
        if not isinstance(raw_captions, dict) or not isinstance(raw_captions.get("captions", {}), dict):
            raise DataError(f"{captions_file}: expected {{\"captions\": {{qid: text}}}}")
        captions = raw_captions.get("captions", {})

    # pid_splits.json also lists minival / trainval / minitrain; the paper uses train/val/test.
    absent = [s for s in SPLITS if s not in pid_splits]
    if absent:
        raise DataError(f"{splits_file}: missing split(s) {', '.join(absent)} (found {', '.join(pid_splits)})")
    rows_by_split: dict[str, list[dict]] = {}
    stats = {"skipped": 0, "zero_filled": 0}
    for split in SPLITS:
        qids = pid_splits[split]
        if not isinstance(qids, list):
            raise DataError(f"{splits_file}: split {split!r} must be a list of qids")
        rows = []
        for qid in qids:
            qid = str(qid)
            if qid not in problems:
                raise DataError(f"{splits_file}: problem {qid!r} of split {split!r} is not in {problems_file}")
            rows.append(_row(problems[qid], qid, split, root, captions, problems_file))
        rows, skipped, zeroed = apply_missing_image(rows, missing_image, problems_file)
        stats["skipped"] += skipped
        stats["zero_filled"] += zeroed
        rows_by_split[split] = rows
    return rows_by_split, stats


def _row(raw: Any, qid: str, split: str, root: Path, captions: dict, file: Path) -> dict:
    # ``image_record`` is not a ScienceQA field: real data leaves it "", the synthetic generator fills it.
    image_name = raw.get("image") if isinstance(raw, dict) else None
    image_path = ""
    if image_name:
        folder = raw.get("split") or split  # images live under the problem's own split folder
        image_path = str(root / "images" / folder / qid / image_name)
    caption = captions.get(qid, "") if image_name else ""
    return make_problem(
        raw, qid=qid, file=file, required=REQUIRED,
        split=split, image=image_path, has_image=bool(image_name),
        caption=caption if isinstance(caption, str) else "", features_zeroed=False,
    )


def load_scienceqa_hub(hub_id: str, image_dir: str | Path, missing_image: str = "error") -> tuple[dict[str, list[dict]], dict]:
    """Load the hub copy (``derek-thomas/ScienceQA``) with ``datasets.load_dataset``.

    Its images arrive as PIL objects; they are written to ``image_dir/<split>/<qid>/image.png``
    so every problem row points to a file, as with the original layout. The hub copy has no qids:
    a problem's qid is ``<split>-<row index>``.
    """
    ds = load_hub_dataset(hub_id)
    image_dir = Path(image_dir)
    rows_by_split: dict[str, list[dict]] = {}
    for split, hub_split in HUB_SPLITS.items():
        if hub_split not in ds:
            raise DataError(f"hub dataset {hub_id}: no {hub_split!r} split (has {', '.join(ds)})")
        rows = []
        for i, raw in enumerate(ds[hub_split]):
            qid = f"{split}-{i}"
            raw = dict(raw)
            image = raw.pop("image", None)
            path = ""
            if image is not None:
                target = image_dir / split / qid / "image.png"
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    image.convert("RGB").save(target)
                path = str(target)
            rows.append(make_problem(raw, qid=qid, file=f"hub:{hub_id}", required=REQUIRED[:4],
                                     split=split, image=path, has_image=bool(path), caption="",
                                     image_record="", features_zeroed=False))
        rows_by_split[split] = rows
    return rows_by_split, {"skipped": 0, "zero_filled": 0}


def load_hub_dataset(hub_id: str, **kwargs: Any):
    """``datasets.load_dataset(hub_id)`` with an actionable message when the hub is unreachable."""
    try:
        return datasets.load_dataset(hub_id, **kwargs)
    except Exception as e:  # offline: ConnectionError, OfflineModeIsEnabled, DatasetNotFoundError, ...
        raise DataError(
            f"could not load the Hugging Face dataset {hub_id!r} ({type(e).__name__}: {str(e)[:300]}). "
            "The hub may be unreachable from this machine: download the dataset in its original "
            "layout and pass data.path=<directory> instead of data.hub_id."
        ) from e
