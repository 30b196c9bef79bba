"""Prompt formats pinned to the exact strings (ares.md / MM-CoT), answer extraction."""

import random

import pytest

from aresnb.data.prompts import build_source, build_target, extract_answer, strip_solution_prefix, token_lengths

P = {"question": "Which  animal\ncan fly?", "choices": ["dog", "eagle", "cow"], "answer": 1,
     "hint": "Look at  the animals.", "caption": "A picture of animals.",
     "lecture": "Birds have\nwings.", "solution": "An eagle has wings.  So the answer is eagle."}
SOURCE_HEAD = ("Question: Which animal can fly?\nContext: Look at the animals. A picture of animals.\n"
               "Options: (A) dog (B) eagle (C) cow\n")


def test_qcm_e():
    assert build_source(P, "QCM-E") == SOURCE_HEAD + "Solution:"
    assert build_target(P, "QCM-E") == "Solution: An eagle has wings. So the answer is eagle."


def test_qcm_le():
    assert build_source(P, "QCM-LE") == SOURCE_HEAD + "Solution:"
    assert build_target(P, "QCM-LE") == "Solution: Birds have wings. An eagle has wings. So the answer is eagle."


def test_qcm_a():
    assert build_source(P, "QCM-A") == SOURCE_HEAD + "Answer:"
    assert build_target(P, "QCM-A") == "The answer is (B)."


def test_qcmg_a_uses_generated_or_gold_rationale():
    assert build_source(P, "QCMG-A", rationale="Solution: Eagles fly.") == SOURCE_HEAD + "Solution: Eagles fly.\nAnswer:"
    assert build_source(P, "QCMG-A") == SOURCE_HEAD + "Solution: An eagle has wings. So the answer is eagle.\nAnswer:"
    assert build_target(P, "QCMG-A") == "The answer is (B)."


def test_context_na_and_no_caption():
    bare = {**P, "hint": "", "caption": ""}
    assert "\nContext: N/A\n" in build_source(bare, "QCM-E")
    assert "\nContext: Look at the animals.\n" in build_source(P, "QCM-E", use_caption=False)


def test_unknown_format():
    with pytest.raises(ValueError, match="QCM-X"):
        build_source(P, "QCM-X")


def test_strip_solution_prefix():
    assert strip_solution_prefix("Solution: An eagle.") == "An eagle."
    assert strip_solution_prefix("  Solution:An eagle.") == "An eagle."
    assert strip_solution_prefix("An eagle.") == "An eagle."


def test_extract_answer():
    rng = random.Random(0)
    assert extract_answer("The answer is (C).", 3, rng) == (2, True)
    assert extract_answer("blah The answer is (A)", 3, rng) == (0, True)
    # Failures fall back to a seeded random option and say so.
    a = [extract_answer("The answer is C", 3, random.Random(5)) for _ in range(2)]
    assert a[0] == a[1] and a[0][1] is False and 0 <= a[0][0] < 3
    idx, ok = extract_answer("The answer is (D).", 3, random.Random(1))  # letter beyond the options
    assert ok is False and idx < 3


def test_token_lengths_whitespace():
    lengths = token_lengths([P], "QCM-A")
    assert lengths["target"] == [4]
    assert lengths["source"][0] == len(build_source(P, "QCM-A").split())
