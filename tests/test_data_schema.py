"""Problem schema: validation errors name qid + file; missing-image policies; categories."""

import json
from pathlib import Path

import pytest

from aresnb.data import categories
from aresnb.data.schema import CATEGORY_COLUMNS, COLUMNS, DataError, category_counts, to_dataset_dict
from aresnb.data.scienceqa import load_scienceqa_dir


def problem(**kw):
    base = {"question": "Which is red?", "choices": ["red", "blue"], "answer": 0, "hint": "", "image": None,
            "task": "closed choice", "grade": "grade3", "subject": "natural science", "topic": "t",
            "category": "c", "skill": "s", "lecture": "L.", "solution": "S.", "split": "train"}
    base.update(kw)
    return base


def write_dir(root: Path, problems: dict, splits: dict | None = None, images: tuple = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "problems.json").write_text(json.dumps(problems))
    splits = splits or {"train": [q for q, p in problems.items() if p.get("split") == "train"],
                        "val": [q for q, p in problems.items() if p.get("split") == "val"],
                        "test": [q for q, p in problems.items() if p.get("split") == "test"]}
    (root / "pid_splits.json").write_text(json.dumps(splits))
    for split, qid in images:
        path = root / "images" / split / qid / "image.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image
        Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    return root


def test_valid_dir_loads_every_column(tmp_path):
    root = write_dir(tmp_path / "d", {"1": problem(), "2": problem(split="val", image="image.png"),
                                     "3": problem(split="test")}, images=[("val", "2")])
    rows, stats = load_scienceqa_dir(root)
    assert {s: len(r) for s, r in rows.items()} == {"train": 1, "val": 1, "test": 1}
    row = rows["val"][0]
    assert set(row) == set(COLUMNS)
    assert row["has_image"] and Path(row["image"]).is_file() and row["image_record"] == ""
    assert stats == {"skipped": 0, "zero_filled": 0}
    ds = to_dataset_dict(rows)
    assert ds["train"][0]["choices"] == ["red", "blue"]


def test_missing_file(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "pid_splits.json").write_text("{}")
    with pytest.raises(DataError, match="problems.json"):
        load_scienceqa_dir(root)


def test_malformed_json_names_file(tmp_path):
    root = write_dir(tmp_path / "d", {"1": problem()})
    (root / "problems.json").write_text('{"1": {"question": ')
    with pytest.raises(DataError, match=r"problems.json: malformed JSON at line 1"):
        load_scienceqa_dir(root)


def test_missing_field_names_qid_and_file(tmp_path):
    bad = problem()
    del bad["choices"]
    root = write_dir(tmp_path / "d", {"7": bad})
    with pytest.raises(DataError, match=r"problems.json: problem '7': missing field\(s\) choices"):
        load_scienceqa_dir(root)


def test_answer_out_of_range(tmp_path):
    root = write_dir(tmp_path / "d", {"9": problem(answer=2)})
    with pytest.raises(DataError, match=r"problem '9': answer index 2 out of range for 2 choices"):
        load_scienceqa_dir(root)


def test_split_lists_unknown_qid(tmp_path):
    root = write_dir(tmp_path / "d", {"1": problem()}, splits={"train": ["1", "42"], "val": [], "test": []})
    with pytest.raises(DataError, match=r"pid_splits.json: problem '42'"):
        load_scienceqa_dir(root)


@pytest.mark.parametrize("policy", ["error", "skip", "zeros"])
def test_missing_image_policies(tmp_path, policy):
    probs = {"1": problem(image="image.png"), "2": problem(image="image.png"), "3": problem()}
    root = write_dir(tmp_path / "d", probs, images=[("train", "1")])
    if policy == "error":
        with pytest.raises(DataError, match=r"problem '2': image not found: .*images/train/2/image.png"):
            load_scienceqa_dir(root, "error")
        return
    rows, stats = load_scienceqa_dir(root, policy)
    qids = [r["qid"] for r in rows["train"]]
    if policy == "skip":
        assert qids == ["1", "3"] and stats == {"skipped": 1, "zero_filled": 0}
    else:
        assert qids == ["1", "2", "3"] and stats == {"skipped": 0, "zero_filled": 1}
        zeroed = rows["train"][1]
        assert zeroed["features_zeroed"] and zeroed["has_image"] and zeroed["image"] == ""
        assert "IMG" in categories(zeroed)


def test_categories():
    assert categories(problem()) == ["NAT", "NO", "G1-6"]
    assert categories(problem(subject="social science", hint="h", grade="grade7")) == ["SOC", "TXT", "G7-12"]
    assert categories({**problem(subject="language science", hint="h", grade="grade12"), "has_image": True}) == \
        ["LAN", "TXT", "IMG", "G7-12"]
    counts = category_counts({"train": [problem(), problem(grade="grade9")]})
    assert counts["train"]["NO"] == 2 and counts["train"]["G1-6"] == 1 and counts["train"]["total"] == 2
    assert set(CATEGORY_COLUMNS) <= set(counts["train"])
