"""A-OKVQA: from its original JSON files + a COCO 2017 image folder, or from the hub copy.

Original files: ``aokvqa_v1p0_{train,val,test}.json``, each a list of
``{question_id, image_id, question, choices, correct_choice_idx, direct_answers, rationales, ...}``;
images at ``<image_dir>/<split>2017/<image_id:012d>.jpg`` (COCO 2017).

Splits, as in the paper: the official **val** set is the test set (the official test set has no
answers and is not used); our val split is a seeded hold-out of the official train set of the
same size as the official val (at most 10% of train). The three rationales, joined, are the gold
solution; A-OKVQA has no hint, lecture, subject or grade.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .schema import DataError, apply_missing_image, make_problem, read_json_file
from .scienceqa import load_hub_dataset

HUB_ID = "HuggingFaceM4/A-OKVQA"
REQUIRED = ("question_id", "question", "choices", "correct_choice_idx", "rationales")


def _convert(raw: Any, index: int, file: str, split: str, image_path: str) -> dict:
    if not isinstance(raw, dict):
        raise DataError(f"{file}: entry {index}: expected a JSON object, got {type(raw).__name__}")
    qid = str(raw.get("question_id", f"#{index}"))
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise DataError(f"{file}: problem {qid!r}: missing field(s) {', '.join(missing)}")
    rationales = raw["rationales"] or []
    if not isinstance(rationales, list) or not all(isinstance(r, str) for r in rationales):
        raise DataError(f"{file}: problem {qid!r}: field 'rationales' must be a list of strings")
    mapped = {
        "question": raw["question"], "choices": raw["choices"], "answer": raw["correct_choice_idx"],
        "hint": "", "caption": "", "lecture": "", "solution": " ".join(r.strip() for r in rationales),
        "subject": "", "grade": "", "category": "", "topic": "", "skill": "", "task": "closed choice",
    }
    return make_problem(mapped, qid=qid, file=file, required=(), split=split, image=image_path,
                        has_image=bool(image_path), image_record="", features_zeroed=False)


def coco_image_path(image_dir: Path, coco_split: str, image_id: Any) -> str:
    """COCO 2017 names are zero-padded to 12 digits; an unpadded name is accepted too."""
    folder = image_dir / f"{coco_split}2017"
    padded = folder / f"{int(image_id):012d}.jpg"
    if padded.exists():
        return str(padded)
    plain = folder / f"{image_id}.jpg"
    return str(plain) if plain.exists() else str(padded)


def load_aokvqa_dir(path: str | Path, image_dir: str | Path | None, missing_image: str = "error",
                    seed: int = 0) -> tuple[dict[str, list[dict]], dict]:
    """Read the original A-OKVQA files -> ({train, val, test: rows}, {"skipped", "zero_filled"})."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"A-OKVQA directory not found: {root} (data.path)")
    if image_dir is None:
        raise DataError("A-OKVQA needs data.image_dir: the folder holding COCO 2017 train2017/ and val2017/")
    image_dir = Path(image_dir).expanduser().resolve()
    official: dict[str, list[dict]] = {}
    for coco_split in ("train", "val"):
        file = root / f"aokvqa_v1p0_{coco_split}.json"
        entries = read_json_file(file, "A-OKVQA file")
        if not isinstance(entries, list):
            raise DataError(f"{file}: expected a JSON list of questions, got {type(entries).__name__}")
        rows = []
        for i, raw in enumerate(entries):
            image_id = raw.get("image_id") if isinstance(raw, dict) else None
            if image_id is None:
                qid = raw.get("question_id", f"#{i}") if isinstance(raw, dict) else f"#{i}"
                raise DataError(f"{file}: problem {qid!r}: missing field(s) image_id")
            rows.append(_convert(raw, i, str(file), coco_split, coco_image_path(image_dir, coco_split, image_id)))
        official[coco_split] = rows
    return _paper_splits(official, missing_image, str(root), seed)


def load_aokvqa_hub(hub_id: str, image_dir: str | Path, missing_image: str = "error", seed: int = 0) -> tuple[dict[str, list[dict]], dict]:
    """``datasets.load_dataset('HuggingFaceM4/A-OKVQA')``; its PIL images are written to ``image_dir``."""
    ds = load_hub_dataset(hub_id)
    image_dir = Path(image_dir)
    official: dict[str, list[dict]] = {}
    for coco_split, hub_split in (("train", "train"), ("val", "validation")):
        if hub_split not in ds:
            raise DataError(f"hub dataset {hub_id}: no {hub_split!r} split (has {', '.join(ds)})")
        rows = []
        for i, raw in enumerate(ds[hub_split]):
            raw = dict(raw)
            image = raw.pop("image", None)
            path = ""
            if image is not None:
                target = image_dir / coco_split / f"{raw.get('question_id', i)}.jpg"
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    image.convert("RGB").save(target)
                path = str(target)
            rows.append(_convert(raw, i, f"hub:{hub_id}/{hub_split}", coco_split, path))
        official[coco_split] = rows
    return _paper_splits(official, missing_image, f"hub:{hub_id}", seed)


def _paper_splits(official: dict[str, list[dict]], missing_image: str, where: str, seed: int):
    train = list(official["train"])
    n_val = max(1, min(len(official["val"]), len(train) // 10))
    if len(train) < 2:
        raise DataError(f"{where}: A-OKVQA train has {len(train)} problem(s); need at least 2 to hold out a val split")
    held = set(random.Random(seed).sample(range(len(train)), n_val))
    splits = {
        "train": [dict(r, split="train") for i, r in enumerate(train) if i not in held],
        "val": [dict(r, split="val") for i, r in enumerate(train) if i in held],
        "test": [dict(r, split="test") for r in official["val"]],
    }
    stats = {"skipped": 0, "zero_filled": 0}
    for split, rows in splits.items():
        splits[split], skipped, zeroed = apply_missing_image(rows, missing_image, where)
        stats["skipped"] += skipped
        stats["zero_filled"] += zeroed
    return splits, stats
