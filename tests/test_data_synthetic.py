"""The synthetic generator (determinism, layout, leakage) and check_sentence."""

import hashlib
import json
import re
import subprocess
import sys

import pytest

from aresnb.data import categories
from aresnb.data.schema import CATEGORY_COLUMNS
from aresnb.data.scienceqa import load_scienceqa_dir
from aresnb.data.synthetic import write_synthetic_scienceqa
from aresnb.data.synthetic_grader import check_sentence


def digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = write_synthetic_scienceqa(tmp_path_factory.mktemp("syn") / "raw", 48, 12, 12, 32, seed=3)
    rows, stats = load_scienceqa_dir(root)
    return root, rows, stats


def test_same_seed_identical_files(tmp_path, synth):
    root, _, _ = synth
    again = write_synthetic_scienceqa(tmp_path / "again", 48, 12, 12, 32, seed=3)
    other = write_synthetic_scienceqa(tmp_path / "other", 48, 12, 12, 32, seed=4)
    assert digest(root) == digest(again)
    assert digest(root) != digest(other)


def test_original_layout_and_every_category(synth):
    root, rows, stats = synth
    assert {p.name for p in root.iterdir()} == {"problems.json", "pid_splits.json", "captions.json", "images"}
    assert {s: len(r) for s, r in rows.items()} == {"train": 48, "val": 12, "test": 12}
    assert stats == {"skipped": 0, "zero_filled": 0}
    for split, split_rows in rows.items():
        seen = {c for r in split_rows for c in categories(r)}
        assert seen == set(CATEGORY_COLUMNS), split
    img = [r for r in rows["train"] if r["has_image"]]
    assert img and all(re.search(r"images/train/s\d+/image.png$", r["image"]) for r in img)
    assert all(json.loads(r["image_record"])["kind"] == "image" for r in img)


def test_text_does_not_reveal_image_answers(synth):
    _, rows, _ = synth
    for r in rows["train"]:
        if not r["has_image"]:
            continue
        answer = r["choices"][r["answer"]].lower()
        visible = " ".join([r["question"], r["hint"], r["caption"]]).lower()
        assert not re.search(rf"\b{re.escape(answer)}\b", visible), (r["qid"], visible)
        sentences = re.split(r"(?<=[.!?])\s+", r["solution"])
        assert 3 <= len(sentences) <= 5, r["solution"]


def test_gold_sentences_check_true_or_neutral(synth):
    _, rows, _ = synth
    verdicts = []
    for r in rows["train"]:
        for s in re.split(r"(?<=[.!?])\s+", r["solution"]):
            v = check_sentence(s, r["image_record"])
            assert v is not False, (r["qid"], s)
            verdicts.append(v)
    assert verdicts.count(True) > len(verdicts) / 2


IMG = {"kind": "image", "facts": {"colour": "red", "shape": "triangle", "count": 1},
       "refs": ["image", "picture", "shape", "shapes", "shown", "there", "it", "this", "object", "objects"],
       "choices": ["red", "green", "blue", "yellow"], "answer": "red", "answer_letter": "A"}
COUNT = {**IMG, "facts": {"colour": "blue", "shape": "circle", "count": 2}, "choices": ["1", "2", "3"],
         "answer": "2", "answer_letter": "B"}
TEMP = {"kind": "text", "entities": ["tea", "juice"], "values": {"tea": 70, "juice": 5},
        "predicates": {"is hotter": ["tea"], "is colder": ["juice"]}, "choices": ["juice", "tea"],
        "answer": "tea", "answer_letter": "B"}
ANIMALS = {"kind": "knowledge", "entities": ["eagle", "dog", "fish"],
           "predicates": {"can fly": ["eagle"], "lives in water": ["fish"]},
           "choices": ["dog", "eagle", "fish"], "answer": "eagle", "answer_letter": "B"}


@pytest.mark.parametrize("sentence,record,expected", [
    ("The shape in the image is red.", IMG, True),
    ("The shape in the image is blue.", IMG, False),
    ("the SHAPE is Red!!", IMG, True),
    ("The triangle is purple.", IMG, False),
    ("The shape is not blue.", IMG, True),
    ("The shape isn't red.", IMG, False),
    ("There is a circle in the picture.", IMG, False),
    ("The picture shows one red triangle.", IMG, True),
    ("There are two triangles.", IMG, False),
    ("The options are red, green and blue.", IMG, None),
    ("A triangle has three sides.", IMG, None),
    ("Red is a warm colour.", IMG, None),
    ("The background is white.", IMG, None),
    ("Colour is how light bounces.", IMG, None),
    ("So the answer is red.", IMG, True),
    ("The answer is (A).", IMG, True),
    ("The answer is (C).", IMG, False),
    ("So the answer is blue.", IMG, False),
    ("There are two circles in the picture.", COUNT, True),
    ("The picture shows 3 blue circles.", COUNT, False),
    ("The number of circles is 2.", COUNT, True),
    ("So the answer is 2.", COUNT, True),
    ("The tea is 70°C.", TEMP, True),
    ("The tea is 5°C.", TEMP, False),
    ("So the tea is hotter than the juice.", TEMP, True),
    ("The juice is hotter than the tea.", TEMP, False),
    ("The juice is not hotter than the tea.", TEMP, True),
    ("Temperature measures how hot something is.", TEMP, None),
    ("An eagle can fly.", ANIMALS, True),
    ("Dogs can fly.", ANIMALS, False),
    ("A dog cannot fly.", ANIMALS, True),
    ("A fish lives in water.", ANIMALS, True),
    ("", IMG, None),
    ("the the the . . red red", {}, None),
    ("@@ ## shape is is is", IMG, None),
])
def test_check_sentence(sentence, record, expected):
    assert check_sentence(sentence, record) is expected
    assert check_sentence(sentence, json.dumps(record)) is expected  # the image_record column is JSON


def test_check_sentence_bad_record():
    assert check_sentence("The shape is red.", "") is None
    assert check_sentence("The shape is red.", "{not json") is None


def test_synthetic_module_does_not_import_torch():
    code = "import sys, aresnb.data.synthetic, aresnb.data; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_wrong_facts_only_in_a_share_of_the_train_golds(tmp_path):
    from aresnb.data.synthetic_grader import FALSE, grade_sentence
    from aresnb.text.sentences import sentence_texts

    rows, _ = load_scienceqa_dir(write_synthetic_scienceqa(tmp_path / "w", 240, 48, 48, 16, seed=1, wrong_fact_rate=0.5))
    wrong = {split: [sum(grade_sentence(s, r["image_record"]) == FALSE for s in sentence_texts(r["solution"]))
                     for r in split_rows] for split, split_rows in rows.items()}
    assert set(wrong["train"]) == {0, 1}  # at most one wrong fact, and the conclusion stays right
    assert 0.35 < sum(wrong["train"]) / 240 < 0.65
    assert sum(wrong["val"]) == sum(wrong["test"]) == 0
