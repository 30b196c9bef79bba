"""The real ScienceQA loader on the real sample (../shared/data/scienceqa-mini) and the hub path."""

import subprocess
import sys
from pathlib import Path

import pytest

from aresnb.data.schema import DataError, category_counts, to_dataset_dict
from aresnb.data.scienceqa import load_hub_dataset, load_scienceqa_dir
from aresnb.io import read_json

from conftest import shared_path

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def scienceqa_mini():
    return shared_path("data", "scienceqa-mini")


def test_scienceqa_mini_loads(scienceqa_mini):
    root = scienceqa_mini
    rows, stats = load_scienceqa_dir(root, missing_image="zeros")
    assert {s: len(r) for s, r in rows.items()} == {"train": 50, "val": 50, "test": 50}
    with_image = {s: sum(bool(r["image"]) for r in rs) for s, rs in rows.items()}
    assert with_image == {"train": 0, "val": 0, "test": 24}
    assert stats == {"skipped": 0, "zero_filled": 43}
    first = rows["train"][0]
    assert first["qid"] == "1" and first["choices"][0] == "West Virginia" and first["grade"] == "grade2"
    assert first["caption"] and first["has_image"] and first["features_zeroed"]
    counts = category_counts(to_dataset_dict(rows))
    assert counts["test"]["total"] == 50 and counts["test"]["IMG"] >= 24


def test_scienceqa_mini_errors_by_default(scienceqa_mini):
    with pytest.raises(DataError, match=r"image not found: .*images/train/"):
        load_scienceqa_dir(scienceqa_mini)


def test_hub_unreachable_message(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'derek-thomas/ScienceQA' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"derek-thomas/ScienceQA.*pass data.path"):
        load_hub_dataset("derek-thomas/ScienceQA")


def test_hub_rows_go_through_the_schema(monkeypatch, tmp_path):
    """A stand-in for the hub copy (same columns, PIL images) is converted like the real one."""
    import datasets
    from PIL import Image

    from aresnb.data.scienceqa import load_scienceqa_hub

    def row(img):
        return {"image": img, "question": "Q?", "choices": ["a", "b"], "answer": 1, "hint": "", "task": "t",
                "grade": "grade4", "subject": "natural science", "topic": "x", "category": "y", "skill": "z",
                "lecture": "L.", "solution": "S."}

    fake = {s: [row(Image.new("RGB", (4, 4))), row(None)] for s in ("train", "validation", "test")}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: fake)
    rows, _ = load_scienceqa_hub("derek-thomas/ScienceQA", tmp_path)
    assert [r["qid"] for r in rows["val"]] == ["val-0", "val-1"]
    assert rows["val"][0]["image"].endswith("val/val-0/image.png") and not rows["val"][1]["has_image"]


@pytest.mark.slow
def test_runner_loads_any_directory_in_the_scienceqa_layout(shared_dir, tmp_path):
    """`aresnb run` with data.source=scienceqa and data.path on the real 150-problem sample."""
    cmd = [sys.executable, "-m", "aresnb.pipeline.cli", "run", str(ROOT / "params" / "smoke.yaml"), "--stages", "01",
           "--set", f"run.output_dir={tmp_path}", "--set", "data.source=scienceqa",
           "--set", f"data.path={shared_dir / 'data' / 'scienceqa-mini'}", "--set", "data.missing_image=zeros", "--quiet"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    s = read_json(tmp_path / "smoke" / "01_data" / "summary.json")
    assert s["problems"] == {"train": 50, "val": 50, "test": 50}
    assert s["zero_filled"] == 43
