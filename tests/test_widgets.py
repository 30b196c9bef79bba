"""The notebooks' interactive panels, driven as a user drives them: picking a problem, a sample, a
split or a comparison shows what was picked. The HTML builders are tested in test_correction_panel.py
and test_teacher_stage.py; here widgets are found by kind and by the options they offer, not by
their place in the layout."""

import re

import ipywidgets as w
import pandas as pd

from aresnb.config import load_config
from aresnb.data.schema import COLUMNS as PROBLEM_COLUMNS
from aresnb.data.schema import to_dataset_dict
from aresnb.io import write_jsonl
from aresnb.paths import RunPaths
from aresnb.present.widgets.rationale_panel import rationale_panel
from aresnb.present.widgets.score_panel import score_panel
from aresnb.stages.correction_sft import teacher_callbacks
from aresnb.stages.results import read_rationales


def widgets_of(panel, kind) -> list:
    """Every widget of ``kind`` in the panel, depth first."""
    found, todo = [], [panel]
    while todo:
        widget = todo.pop(0)
        if isinstance(widget, kind):
            found.append(widget)
        todo[:0] = list(getattr(widget, "children", ()))
    return found


def dropdown_offering(panel, value) -> w.Dropdown:
    for d in widgets_of(panel, w.Dropdown):
        if value in [o[1] if isinstance(o, tuple) else o for o in d.options]:
            return d
    raise AssertionError(f"no dropdown offers {value!r}")


def shown(panel) -> str:
    """The panel's HTML output."""
    return "\n".join(h.value for h in widgets_of(panel, w.HTML))


def shown_text(panel) -> str:
    """What the panel shows as text: its HTML output without tags and styles."""
    html = re.sub(r"<style>.*?</style>", " ", shown(panel), flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace(" .", ".")


def problem(qid: str, split: str = "test", **kw) -> dict:
    row = {c: "" for c in PROBLEM_COLUMNS}
    row.update({"qid": qid, "question": f"Question of {qid}?", "choices": ["iron", "wood"], "answer": 0,
                "has_image": False, "features_zeroed": False, "solution": "Iron is a metal.",
                "subject": "natural science", "grade": "grade3", "split": split, **kw})
    return row


# ---- stage 03: the score panel -------------------------------------------------------------------


def test_score_panel_shows_the_picked_problem_and_sample():
    samples = pd.DataFrame([
        {"qid": "q1", "sample_index": 0, "sentences": ["First of q1."], "scores": [1.0], "dropped": False,
         "raw_reply": "{}"},
        {"qid": "q1", "sample_index": 1, "sentences": ["Second of q1."], "scores": [0.0], "dropped": False,
         "raw_reply": "{}"},
        {"qid": "q2", "sample_index": 0, "sentences": ["Only of q2."], "scores": None, "dropped": True,
         "drop_reason": "invalid_reply", "raw_reply": "not json"},
    ])
    panel = score_panel(samples, {q: problem(q) for q in ("q1", "q2")})
    assert "First of q1." in shown(panel) and "Second of q1." not in shown(panel)  # the first sample to start
    dropdown_offering(panel, 1).value = 1
    assert "Second of q1." in shown(panel) and "First of q1." not in shown(panel)
    dropdown_offering(panel, "q2").value = "q2"
    assert dropdown_offering(panel, 0).options == (0,)  # q2's samples only
    assert "Only of q2." in shown(panel) and "Question of q2?" in shown(panel) and "dropped: invalid_reply" in shown(panel)


# ---- stage 05: the rationale panel ---------------------------------------------------------------


def _sources(tmp_path):
    paths = RunPaths.from_dir(tmp_path / "run")
    test, val = [problem("t0"), problem("t1")], [problem("v0", "val")]
    write_jsonl(paths.rationales_file("baseline", "test"), [{"qid": "t0", "rationale": "Wood is a metal."},
                                                            {"qid": "t1", "rationale": "Baseline of t1."}])
    write_jsonl(paths.rationales_file("round_1", "test"), [{"qid": "t0", "rationale": "Iron is a metal."},
                                                           {"qid": "t1", "rationale": "ARES of t1."}])
    write_jsonl(paths.rationales_file("baseline", "val"), [{"qid": "v0", "rationale": "Baseline of v0."}])
    return read_rationales(paths, 1, ("test", "val"), {"test": test, "val": val})


def test_rationale_panel_follows_problem_split_and_comparison(tmp_path):
    asked = []
    panel = rationale_panel(_sources(tmp_path), scorer=lambda p, text: asked.append((p["qid"], text)) or [0.5])
    assert "Question of t0?" in shown_text(panel) and "Wood is a metal." in shown_text(panel)
    assert '<del class="ares-del">Wood</del>' in shown(panel)  # ARES diffed against the previous column
    assert ("t0", "Iron is a metal.") in asked  # unscored rationales go to the scorer

    dropdown_offering(panel, "none").value = "none"
    assert '<del class="ares-del">Wood</del>' not in shown(panel) and "Wood is a metal." in shown_text(panel)
    dropdown_offering(panel, "gold").value = "gold"  # every column against the gold solution
    assert '<del class="ares-del">Iron</del>' in shown(panel)  # the baseline wrote Wood where gold says Iron

    dropdown_offering(panel, "t1").value = "t1"
    assert "ARES of t1." in shown_text(panel) and "Wood is a metal." not in shown_text(panel)

    dropdown_offering(panel, "val").value = "val"
    assert dropdown_offering(panel, "v0").value == "v0"  # the split's own problems
    assert "Baseline of v0." in shown_text(panel) and "t1" not in [o[1] for o in dropdown_offering(panel, "v0").options]


def test_rationale_panel_asks_a_missing_correction_once_and_shows_it(tmp_path):
    write_jsonl(RunPaths.from_dir(tmp_path / "run").rl_rationales_file(1, "test"), [{"qid": "t0", "rationale": "Iron is is."}])
    asked = []
    panel = rationale_panel(_sources(tmp_path), corrector=lambda p, rl_text: asked.append((p["qid"], rl_text)) or "Iron is a metal!")
    assert asked == [("t0", "Iron is is.")] and "Iron is a metal!" in shown_text(panel)
    dropdown_offering(panel, "none").value = "none"  # a re-render asks nothing again
    assert asked == [("t0", "Iron is is.")] and "asked on demand" in shown_text(panel)


def test_teacher_callbacks_are_offered_only_where_calls_are_cheap_and_ask_the_teacher(tmp_path):
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=panel", "teacher.serve_local=false",
                             "teacher.base_url=https://paid.example/v1"])
    assert teacher_callbacks(cfg, RunPaths(cfg)) == (None, None, None)  # a paid endpoint: only when forced
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=panel"])  # the local reference Teacher
    paths = RunPaths(cfg)
    p = problem("q0", "train", solution="Iron is a metal. So the answer is iron.")
    to_dataset_dict({"train": [p], "val": [problem("v0", "val")], "test": [problem("t0")]}).save_to_disk(
        str(paths.dataset_dir))
    scorer, corrector, teacher = teacher_callbacks(cfg, paths)
    try:
        on_topic, off_topic = scorer(p, "Iron is a metal. The sky is cloudy today.")
        assert on_topic >= 0.9 and off_topic <= 0.3
        assert corrector(p, "Iron is a metal. Iron is a metal. Wood is a") == "Iron is a metal. So the answer is iron."
    finally:
        teacher.close()
