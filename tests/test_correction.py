"""Stage 05's pure pieces: reply parsing, status of each correction, selection, resumable caches."""

import pytest

from aresnb.io import read_jsonl
from aresnb.paths import RunPaths
from aresnb.sft.corrections import correction_row, select_problems, summarize_corrections
from aresnb.stages.correction_sft import cached_rationales, reset_if_inputs_changed
from aresnb.teacher.client import CorrectionResult
from aresnb.teacher.validation import InvalidReply, parse_correction

RL = "The magnet is red. The magnet is red. It attracts iron because"


# ---- the Teacher's correction reply (parsed by aresnb.teacher; stage 05 relies on it) ------------


def test_parse_correction_good_replies():
    assert parse_correction('{"corrected_rationale": "  Iron is a metal. "}') == "Iron is a metal."
    assert parse_correction('```json\n{"corrected_rationale": "Iron is a metal."}\n```') == "Iron is a metal."


@pytest.mark.parametrize("reply", [None, "", "   ", '{"corrected_rationale": ""}', '{"corrected_rationale": "  "}'])
def test_parse_correction_empty_replies_are_invalid(reply):
    with pytest.raises(InvalidReply):
        parse_correction(reply)


@pytest.mark.parametrize("reply", [
    "Here is the corrected rationale: Iron is a metal.",  # prose, not JSON
    '{"corrected_rationale": "Iron is',  # truncated
    '{"rationale": "Iron is a metal."}',  # wrong key
    '["Iron is a metal."]',  # wrong shape
    '{"corrected_rationale": 3}',  # not a string
])
def test_parse_correction_malformed_replies_are_invalid(reply):
    with pytest.raises(InvalidReply):
        parse_correction(reply)


# ---- what stage 05 makes of each result ----------------------------------------------------------


def test_correction_row_corrected_uses_teacher_text_and_dedupes_first():
    row = correction_row("q1", RL, CorrectionResult("The magnet is red. It attracts iron because it is a magnet.", False, "{...}"))
    assert row["deduped"] == "The magnet is red. It attracts iron because"
    assert row["duplicates_removed"] == 1
    assert row["status"] == "corrected"
    assert row["target"] == "The magnet is red. It attracts iron because it is a magnet."
    assert row["edit_distance"] == 4  # "it is a magnet." inserted (words)
    assert row["raw_reply"] == "{...}"


def test_correction_row_unchanged_when_teacher_returns_the_same_text():
    row = correction_row("q1", RL, CorrectionResult("The magnet is red.  It attracts iron because", False, "r"))
    assert row["status"] == "unchanged" and row["edit_distance"] == 0
    assert row["target"] == row["deduped"]


@pytest.mark.parametrize("result", [
    CorrectionResult(None, True, "", detail="the reply is empty"),
    CorrectionResult(None, True, "not json", detail="not valid JSON"),
    CorrectionResult("   ", False, '{"corrected_rationale": " "}'),
    None,
])
def test_correction_row_fallback_keeps_the_deduped_rl_rationale(result):
    row = correction_row("q1", RL, result)
    assert row["status"] == "fallback"
    assert row["target"] == "The magnet is red. It attracts iron because"
    assert row["corrected"] is None and row["edit_distance"] == 0


def test_summarize_counts_every_status():
    rows = [correction_row("a", RL, CorrectionResult("Iron is a metal.", False, "r")),
            correction_row("b", "Same.", CorrectionResult("Same.", False, "r")),
            correction_row("c", "x y.", CorrectionResult(None, True, "bad"))]
    s = summarize_corrections(rows)
    assert (s["n_problems"], s["corrected"], s["unchanged"], s["fallback"]) == (3, 1, 1, 1)
    assert s["fallback_rate"] == pytest.approx(1 / 3)
    assert s["duplicate_sentences_removed"] == 1 and s["rationales_with_duplicates"] == 1
    assert s["mean_edit_distance"] == pytest.approx(rows[0]["edit_distance"] / 3)
    assert s["mean_edit_distance_corrected"] == rows[0]["edit_distance"]
    assert "Levenshtein" in s["edit_distance_unit"]


def test_select_problems_is_seeded_and_round_dependent():
    assert select_problems(10, None, 0, 1) == list(range(10))
    assert select_problems(10, 50, 0, 1) == list(range(10))
    a = select_problems(100, 20, 0, 1)
    assert a == select_problems(100, 20, 0, 1) and len(set(a)) == 20 and a == sorted(a)
    assert a != select_problems(100, 20, 0, 2) and a != select_problems(100, 20, 1, 1)


def test_cached_rationales_reused_only_for_the_same_qids(tmp_path):
    path, calls = tmp_path / "rl.jsonl", []

    def make():
        calls.append(1)
        return {"a": "ra", "b": "rb"}

    assert cached_rationales(path, ["a", "b"], make) == {"a": "ra", "b": "rb"}
    assert cached_rationales(path, ["a", "b"], make) == {"a": "ra", "b": "rb"} and len(calls) == 1
    cached_rationales(path, ["b", "a"], make)  # another selection: made again
    assert len(calls) == 2 and [r["qid"] for r in read_jsonl(path)] == ["b", "a"]


def test_reset_if_inputs_changed_discards_stale_artefacts_only(tmp_path):
    paths = RunPaths.from_dir(tmp_path)
    stage_dir = paths.stage_dir("05_correction_sft", 1)
    (stage_dir / "checkpoints").mkdir()
    paths.rl_rationales_file(1, "train").write_text("{}\n")
    (stage_dir / "notes.txt").write_text("keep")
    assert reset_if_inputs_changed(paths, 1, "f1") is True  # unknown provenance: discarded
    assert not (stage_dir / "checkpoints").exists() and not paths.rl_rationales_file(1, "train").exists()
    (stage_dir / "checkpoints").mkdir()
    assert reset_if_inputs_changed(paths, 1, "f1") is False and (stage_dir / "checkpoints").exists()
    assert reset_if_inputs_changed(paths, 1, "f2") is True and not (stage_dir / "checkpoints").exists()
    assert (stage_dir / "notes.txt").read_text() == "keep"
