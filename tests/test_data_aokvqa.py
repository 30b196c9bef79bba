"""A-OKVQA from a tiny hand-made fixture in the original format."""

import json

import pytest
from PIL import Image

from aresnb.data.aokvqa import load_aokvqa_dir
from aresnb.data.schema import DataError


def entry(qid, image_id, answer=0):
    return {"split": "x", "image_id": image_id, "question_id": qid, "question": f"What is {qid}?",
            "choices": ["cat", "dog", "bird", "fish"], "correct_choice_idx": answer, "direct_answers": ["cat"] * 10,
            "difficult_direct_answer": False, "rationales": ["A cat is shown.", "It has whiskers.", "It purrs."]}


@pytest.fixture
def aokvqa_dir(tmp_path):
    root, coco = tmp_path / "aokvqa", tmp_path / "coco"
    root.mkdir()
    train = [entry(f"tr{i}", 100 + i) for i in range(20)]
    val = [entry(f"va{i}", 200 + i, answer=i % 4) for i in range(3)]
    (root / "aokvqa_v1p0_train.json").write_text(json.dumps(train))
    (root / "aokvqa_v1p0_val.json").write_text(json.dumps(val))
    (root / "aokvqa_v1p0_test.json").write_text(json.dumps([]))
    for split, entries in (("train", train), ("val", val)):
        (coco / f"{split}2017").mkdir(parents=True)
        for e in entries:
            Image.new("RGB", (8, 8)).save(coco / f"{split}2017" / f"{e['image_id']:012d}.jpg")
    return root, coco


def test_aokvqa_fixture_loads_with_paper_splits(aokvqa_dir):
    root, coco = aokvqa_dir
    rows, stats = load_aokvqa_dir(root, coco)
    # The official val is the paper's test set; val is a seeded hold-out of train (10%).
    assert {s: len(r) for s, r in rows.items()} == {"train": 18, "val": 2, "test": 3}
    t = rows["test"][2]
    assert t["qid"] == "va2" and t["answer"] == 2 and t["split"] == "test"
    assert t["image"].endswith("val2017/000000000202.jpg") and t["has_image"]
    assert t["solution"] == "A cat is shown. It has whiskers. It purrs."
    assert {r["qid"] for r in rows["val"]}.isdisjoint(r["qid"] for r in rows["train"])
    assert stats == {"skipped": 0, "zero_filled": 0}
    again, _ = load_aokvqa_dir(root, coco)
    assert [r["qid"] for r in again["val"]] == [r["qid"] for r in rows["val"]]


def test_aokvqa_errors(aokvqa_dir, tmp_path):
    root, coco = aokvqa_dir
    with pytest.raises(DataError, match="data.image_dir"):
        load_aokvqa_dir(root, None)
    bad = json.loads((root / "aokvqa_v1p0_val.json").read_text())
    bad[1]["correct_choice_idx"] = 7
    (root / "aokvqa_v1p0_val.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"aokvqa_v1p0_val.json: problem 'va1': answer index 7 out of range"):
        load_aokvqa_dir(root, coco)
    del bad[1]["rationales"]
    bad[1]["correct_choice_idx"] = 0
    (root / "aokvqa_v1p0_val.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"problem 'va1': missing field\(s\) rationales"):
        load_aokvqa_dir(root, coco)


def test_aokvqa_missing_image_policy(aokvqa_dir):
    root, coco = aokvqa_dir
    (coco / "val2017" / "000000000200.jpg").unlink()
    with pytest.raises(DataError, match=r"problem 'va0': image not found"):
        load_aokvqa_dir(root, coco)
    rows, stats = load_aokvqa_dir(root, coco, missing_image="skip")
    assert len(rows["test"]) == 2 and stats["skipped"] == 1
