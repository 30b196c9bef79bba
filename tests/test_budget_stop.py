"""A Teacher budget stop (teacher.max_cost_usd) ends `aresnb run` in one clear line and exit 1,
not in a dump of the failing cell: the refusal's message already says what was spent and what to raise."""

import types
from pathlib import Path

import pytest

from aresnb.pipeline import cli

from aresnb.errors import CLEAR_ERRORS
from aresnb.io import read_json
from aresnb.pipeline import runner
from aresnb.pipeline.runner import _report_failure
from aresnb.stages.steps import Step
from aresnb.teacher import BudgetExceeded

from conftest import write_stage_notebooks

ROOT = Path(__file__).resolve().parent.parent

# Stage 01's stand-in asks the real Teacher client for one score under the run's teacher section.
# Nothing listens on port 9: the budget check refuses before any HTTP call (max_retries=0 makes a
# regression that sends the request fail at once, as TeacherUnreachable, whose message differs).
BUDGET_BODY = """
from aresnb.config import load_config
from aresnb.paths import RunPaths
from aresnb.teacher import ProblemView, ReplyCache, ScoreItem, Teacher, endpoint
cfg = load_config(params)
paths = RunPaths(cfg)
settings = endpoint(cfg).connect("http://127.0.0.1:9/v1", "k", spend_scope=str(paths.run_dir))
problem = ProblemView(qid="q0", question="Which is a mammal?", choices=("shark", "dog"), answer=1, solution="")
with Teacher(settings, ReplyCache(paths.run_dir / "cache.sqlite")) as teacher:
    teacher.score_sentences([ScoreItem(problem, ["A dog feeds its young milk."])])
"""


def test_a_budget_stop_is_a_clear_error_reported_in_one_line(tmp_path):
    assert BudgetExceeded.__name__ in CLEAR_ERRORS
    # papermill hands the runner the kernel's exception by name and message only
    error = types.SimpleNamespace(ename="BudgetExceeded", evalue="teacher.max_cost_usd: the run has spent $1.0000")
    message = _report_failure(Step("03_teacher_scores", 1), error, tmp_path / "03_teacher_scores.round_1.ipynb")
    assert message.splitlines() == ["stage round_1/03_teacher_scores failed: teacher.max_cost_usd: the run has spent $1.0000",
                                    f"executed notebook: {tmp_path / '03_teacher_scores.round_1.ipynb'}"]


@pytest.mark.slow
def test_aresnb_run_stopped_by_the_budget_prints_one_line_and_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", write_stage_notebooks(tmp_path / "nb", BUDGET_BODY))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    out = tmp_path / "out"
    # worst case of one request: 100 completion tokens at $10,000 a million = $1.00 > the $0.50 limit
    sets = [f"run.output_dir={out}", "run.name=budget", "teacher.max_cost_usd=0.5", "teacher.max_tokens=100",
            "teacher.price_output_per_mtok=10000", "teacher.max_retries=0"]
    code = cli.main(["run", str(ROOT / "params" / "smoke.yaml"), "--stages", "01", "--quiet",
                     *[a for kv in sets for a in ("--set", kv)]])
    err = capsys.readouterr().err
    assert code == 1, err
    [line] = [ln for ln in err.splitlines() if "failed" in ln]
    assert line.startswith("aresnb run: stage 01_data failed: teacher.max_cost_usd: the run has spent $0.0000 "
                           "(+$0.0000 in flight) of its $0.5000 limit, and this score request could cost up to $1.0000")
    assert "failing cell" not in err and "Traceback" not in err and "BudgetExceeded" not in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 2  # that line and the executed notebook's path
    entry = read_json(out / "budget" / "manifest.json")["stages"]["01_data"]
    assert entry["status"] == "failed" and "teacher.max_cost_usd" in entry["error"]
