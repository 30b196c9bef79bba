"""Rationale text metrics on hand-made cases: every number here is counted by hand."""

import pytest

from aresnb.text.rationale_metrics import (
    count_repeated_sentences,
    count_repeated_words,
    dedupe_sentences,
    is_unfinished,
    normalize_sentence,
    rationale_quality,
    repeated_sentence_rate,
    repeated_word_rate,
    unfinished_sentence_rate,
    word_diff,
    word_edit_distance,
)


def test_dedupe_removes_later_copies_and_keeps_order():
    text = "The magnet is red. It attracts iron. the magnet is  red! Iron is a metal. It attracts iron."
    out, removed = dedupe_sentences(text)
    assert out == "The magnet is red. It attracts iron. Iron is a metal."
    assert removed == 2


def test_dedupe_keeps_unfinished_tail_and_distinct_sentences():
    out, removed = dedupe_sentences("A cat is a mammal. Dr. Smith agrees. A cat is a")
    assert out == "A cat is a mammal. Dr. Smith agrees. A cat is a"
    assert removed == 0
    assert dedupe_sentences("") == ("", 0)


def test_normalize_sentence_ignores_case_space_and_edge_punctuation():
    assert normalize_sentence("  The  Sun is hot. ") == normalize_sentence("the sun is HOT!") == "the sun is hot"


def test_repeated_sentences_counted_per_rationale():
    assert count_repeated_sentences("A b. A b. A b. C d.") == (2, 4)
    # a sentence repeated in another rationale is not a repeat
    texts = ["A b. C d.", "A b. A b."]
    assert repeated_sentence_rate(texts) == pytest.approx(1 / 4)
    assert repeated_sentence_rate([]) == 0.0


def test_unfinished_sentence_rate():
    assert is_unfinished("It is hot. It is")
    assert not is_unfinished('He said "stop."')
    assert not is_unfinished("")
    texts = ["Done.", "Cut off here", "Also done!", ""]  # the empty one is not counted
    assert unfinished_sentence_rate(texts) == pytest.approx(1 / 3)


def test_repeated_words():
    assert count_repeated_words("the the cat cat cat sat.") == (3, 6)
    assert count_repeated_words("The, the cat") == (1, 3)  # punctuation and case ignored
    assert repeated_word_rate(["a a", "b c"]) == pytest.approx(1 / 4)


def test_rationale_quality_bundle():
    q = rationale_quality(["A b. A b.", "Cut off", ""])
    assert q["n_rationales"] == 3
    assert q["repeated_sentence_rate"] == pytest.approx(1 / 3)
    assert q["rationales_with_repeated_sentence"] == pytest.approx(1 / 3)
    assert q["unfinished_sentence_rate"] == pytest.approx(1 / 2)
    assert q["empty_rate"] == pytest.approx(1 / 3)
    assert q["mean_sentences"] == pytest.approx(1.0)


def test_word_edit_distance_is_levenshtein_over_words():
    assert word_edit_distance("a b c", "a b c") == 0
    assert word_edit_distance("a b c", "a x c") == 1
    assert word_edit_distance("a b c", "a c") == 1
    assert word_edit_distance("", "a b") == 2
    assert word_edit_distance("the cat sat", "a cat sat down") == 2
    assert word_edit_distance("x y", "") == 2


def test_word_diff_ops_reconstruct_both_sides():
    old, new = "the cat sat on the mat", "the dog sat on a mat today"
    ops = word_diff(old, new)
    assert " ".join(o.old for o in ops if o.old) == old
    assert " ".join(o.new for o in ops if o.new) == new
    assert {o.op for o in ops} >= {"equal", "replace", "insert"}
