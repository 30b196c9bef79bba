"""HTML builders of the rationale panel and the Figure-3 page (pure functions, a fake run dir)."""

import base64
import dataclasses
import re

import pandas as pd
import pytest

from aresnb.io import write_jsonl
from aresnb.paths import RunPaths
from aresnb.present.figure3 import figure3_html, pick_examples, write_figure3
from aresnb.present.widgets.rationale_panel import (
    COLUMNS,
    Column,
    columns_html,
    comparison_html,
    image_data_url,
    problem_columns,
    problem_html,
    rationale_html,
    score_color,
)
from aresnb.stages.results import read_rationales

PROBLEM = {"qid": "q1", "question": "Which is a <metal>?", "choices": ["iron", "wood"], "answer": 0,
           "hint": "", "caption": "", "image": "", "has_image": False, "solution": "Iron is a metal.",
           "subject": "natural science", "grade": "grade3"}


def _text(html_str: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html_str)).strip()


def test_rationale_html_marks_inserted_and_deleted_words():
    out = rationale_html("Iron is a metal.", reference="Wood is a metal.", show_scores=False)
    assert '<ins class="ares-ins">Iron</ins>' in out
    assert '<del class="ares-del">Wood</del>' in out
    assert out.index("ares-del") < out.index("ares-ins")  # the deletion comes before its replacement
    assert "ares-score" not in out


def test_rationale_html_deletion_at_the_end_and_no_reference():
    out = rationale_html("It is hot.", reference="It is hot. It is hot.", show_scores=False)
    assert '<del class="ares-del">It is hot.</del>' in out
    assert "<ins" not in out
    plain = rationale_html("It is hot.", show_scores=False)
    assert "<ins" not in plain and "<del" not in plain and _text(plain) == "It is hot."


def test_rationale_html_scores_per_sentence_and_dash_when_unknown():
    out = rationale_html("A is red. B is blue.", scores=[0.0, 1.0])
    assert re.findall(r'class="ares-score"[^>]*>([^<]+)<', out) == ["0.0", "1.0"]
    assert score_color(0.0) in out and score_color(1.0) in out
    # scores that do not align with the sentences are never shown
    out = rationale_html("A is red. B is blue.", scores=[0.3])
    assert re.findall(r'class="ares-score"[^>]*>([^<]+)<', out) == ["\u2014", "\u2014"]


def test_rationale_html_escapes_and_handles_missing():
    out = rationale_html("x < y & z.", show_scores=False)
    assert "x &lt; y &amp; z." in out
    assert "\u2014" in rationale_html(None)
    assert "(empty)" in rationale_html("")


def test_score_color_range():
    assert score_color(None) == "transparent"
    assert score_color(0.0).startswith("hsl(0,") and score_color(1.0).startswith("hsl(120,")
    assert score_color(3.0) == score_color(1.0)


def test_problem_html_marks_gold_and_inlines_image(tmp_path):
    img = tmp_path / "image.png"
    img.write_bytes(b"\x89PNG fake")
    url = image_data_url(str(img))
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]) == b"\x89PNG fake"
    assert image_data_url("") is None and image_data_url(str(tmp_path / "absent.png")) is None
    out = problem_html(PROBLEM, url)
    assert "&lt;metal&gt;" in out and '<img src="data:image/png' in out
    assert re.search(r'ares-gold-choice[^>]*>\(A\) iron', out)
    assert "Context:</b> N/A" in out


def test_columns_html_lays_out_every_column():
    cols = [Column("gold", "Iron is a metal."), Column("ARES", None, note="not yet")]
    out = columns_html(cols)
    assert "repeat(2," in out and out.count('class="ares-col"') == 2 and "not yet" in out
    page = comparison_html(PROBLEM, cols)
    assert page.startswith('<div class="ares-panel"><style>')


def _fake_run(tmp_path):
    paths = RunPaths.from_dir(tmp_path / "run")
    problems = [dict(PROBLEM, qid=f"q{i}") for i in range(3)]
    write_jsonl(paths.rationales_file("baseline", "test"), [
        {"qid": "q0", "rationale": "Wood is a metal."}, {"qid": "q1", "rationale": "Iron is a metal."}])
    write_jsonl(paths.rationales_file("round_1", "test"), [
        {"qid": "q0", "rationale": "Iron is a metal. Wood is not."}, {"qid": "q1", "rationale": "Iron is a metal."}])
    write_jsonl(paths.rl_rationales_file(1, "test"), [{"qid": "q0", "rationale": "Iron is is a metal"}])
    return paths, problems


def test_rationale_sources_columns_in_order_with_diffs_and_scores(tmp_path):
    paths, problems = _fake_run(tmp_path)
    samples = paths.samples_file(1)
    samples.parent.mkdir(parents=True)
    pd.DataFrame({"qid": ["q0"], "rationale": ["Iron  is a metal. Wood is not."], "scores": [[1.0, 0.9]]}).to_parquet(samples)
    src = read_rationales(paths, 1, ("test",), {"test": problems})["test"]
    assert src.qids() == ["q0", "q1"]
    cols = problem_columns(src, "q0")
    assert [c.name for c in cols] == list(COLUMNS)
    by = {c.name: c for c in cols}
    assert by["after RL"].reference == by["baseline"].text  # previous available column
    assert by["Teacher correction"].text is None
    assert by["ARES"].reference == by["after RL"].text  # skips the missing correction
    assert by["ARES"].scores == [1.0, 0.9]  # found in samples.parquet (whitespace-insensitive)
    assert by["baseline"].scores is None
    assert by["gold"].scored is False and "ares-score" not in columns_html([by["gold"]])
    assert "ares-score" in columns_html([by["baseline"]])  # unscored model text shows the dash badge
    calls, asked, corrected = [], {}, []

    def corrector(problem, rl_text):
        corrected.append(problem["qid"])
        return "Iron is a metal."

    cols = problem_columns(src, "q0", compare="gold", scorer=lambda p, t: calls.append(t) or [0.5] * len(t.split(". ")),
                           corrector=corrector, asked=asked)
    by = {c.name: c for c in cols}
    assert by["Teacher correction"].text == "Iron is a metal." and "on demand" in by["Teacher correction"].note
    assert by["baseline"].reference == "Iron is a metal." and by["gold"].reference is None
    assert "Iron is a metal. Wood is not." not in calls  # already scored, not asked again
    by = {c.name: c for c in problem_columns(src, "q0", compare="Teacher correction", corrector=corrector, asked=asked)}
    assert corrected == ["q0"] and asked == {("test", "q0"): "Iron is a metal."}  # asked once, kept by the caller
    assert by["ARES"].reference == "Iron is a metal." and "on demand" in by["Teacher correction"].note
    assert src.texts["Teacher correction"] == {}  # the record is not changed by what was asked


def test_rationale_sources_are_frozen_and_read_every_split_at_once(tmp_path):
    paths, problems = _fake_run(tmp_path)
    corrections = paths.corrections_file(1)
    pd.DataFrame({"qid": ["t0", "t1"], "corrected": ["Fixed.", None], "status": ["corrected", "fallback"]}).to_parquet(corrections)
    train = [dict(PROBLEM, qid="t0"), dict(PROBLEM, qid="t1")]
    by_split = read_rationales(paths, 1, ("test", "train"), {"test": problems, "train": train})
    assert list(by_split) == ["test", "train"] and by_split["test"].run_name == "run"
    assert dict(by_split["train"].texts["Teacher correction"]) == {"t0": "Fixed."}  # a fallback is no correction
    assert by_split["test"].texts["Teacher correction"] == {} and by_split["train"].texts["ARES"] == {}
    assert by_split["test"].notes["ARES"] == "after correction SFT, round 1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        by_split["test"].split = "val"
    with pytest.raises(TypeError):
        by_split["test"].texts["baseline"]["q0"] = "changed"


def test_figure3_page_is_self_contained(tmp_path):
    paths, problems = _fake_run(tmp_path)
    src = read_rationales(paths, 1, ("test",), {"test": problems})["test"]
    assert pick_examples(src, 5) == ["q0", "q1"]  # q0 differs most
    out = write_figure3(src, paths.figure3_file, n=1, scorer=lambda p, t: None)
    page = out.read_text()
    assert out == paths.figure3_file and "Rationales on test: baseline vs ARES (run)" in page
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page.replace("http-equiv", "")
    assert page.count('class="ares-example"') == 1
    assert '<ins class="ares-ins">Iron</ins>' in page and '<del class="ares-del">Wood</del>' in page
    with pytest.raises(KeyError, match="q9"):
        write_figure3(src, tmp_path / "f3.html", qids=["q9"])
    assert "No problem" in figure3_html([])
