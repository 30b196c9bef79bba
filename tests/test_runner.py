"""The papermill runner on tiny stand-in notebooks: order, rounds, skipping, --force, failures."""

import json
from pathlib import Path

import pytest

from aresnb.pipeline import cli

from aresnb.config import load_config
from aresnb.io import read_json
from aresnb.paths import STAGES, RunPaths
from aresnb.pipeline import runner
from aresnb.pipeline.notebook_html import is_trusted
from aresnb.pipeline.runner import RunError, build_schedule, parse_stage_selection, run_pipeline

from conftest import write_stage_notebooks

ROOT = Path(__file__).resolve().parent.parent

STAGE_BODY = """
import json, pathlib
from aresnb.config import load_config
from aresnb.io import write_json
from aresnb.paths import RunPaths, ROUND_STAGES
cfg = load_config(params)
paths = RunPaths(cfg)
stage = "{stage}"
log = paths.run_dir / "executions.log"
log.open("a").write(f"{{stage}} {{round_index}}\\n")
if (paths.run_dir / "fail_{stage}").exists():
    raise ValueError("boom in {stage}")
summary = paths.summary_file(stage, round_index if stage in ROUND_STAGES else None)
write_json(summary, {{"stage": stage, "round": round_index, "value": round_index * 10}})
"""


@pytest.fixture
def fake_notebooks(tmp_path, monkeypatch):
    nb_dir = write_stage_notebooks(tmp_path / "notebooks", STAGE_BODY)
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", nb_dir)
    return nb_dir


def _cfg(tmp_path, *extra):
    return load_config(None, [f"run.output_dir={tmp_path / 'out'}", "run.name=fake", *extra])


def _executions(cfg):
    return (RunPaths(cfg).run_dir / "executions.log").read_text().split("\n")[:-1]


def test_stage_selection_parsing():
    assert parse_stage_selection("01,03-05") == ["01_data", "03_teacher_scores", "04_ppo", "05_correction_sft"]
    assert parse_stage_selection("07_evaluation") == ["07_evaluation"]
    assert parse_stage_selection(None) == list(STAGES)
    for bad in ("08", "05-03", "1x"):
        with pytest.raises(RunError):
            parse_stage_selection(bad)


def test_schedule_repeats_round_stages():
    labels = [s.label for s in build_schedule(2)]
    assert labels == ["01_data", "02_baseline",
                      "round_1/03_teacher_scores", "round_1/04_ppo", "round_1/05_correction_sft",
                      "round_2/03_teacher_scores", "round_2/04_ppo", "round_2/05_correction_sft",
                      "06_answer_lora", "07_evaluation"]


@pytest.mark.slow
def test_run_resume_force_and_failure(tmp_path, fake_notebooks, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))  # the notary that trusts executed notebooks
    cfg = _cfg(tmp_path, "ares.rounds=2")
    paths = RunPaths(cfg)
    manifest = run_pipeline(cfg, output="quiet")
    assert len(_executions(cfg)) == 10
    assert all(v["status"] == "done" for v in manifest["stages"].values())
    assert manifest["params_hash"] == cfg.hash() and manifest["packages"]["torch"]
    assert (paths.notebooks_dir / "04_ppo.round_2.ipynb").exists()
    # each executed notebook is trusted and has its offline HTML page beside it
    assert is_trusted(paths.notebooks_dir / "04_ppo.round_2.ipynb")
    assert "<html" in (paths.notebooks_dir / "04_ppo.round_2.html").read_text()
    # round stages are mirrored: latest round at top level, every round under "rounds"
    mirrored = read_json(paths.summary_file("04_ppo"))
    assert mirrored["latest_round"] == 2 and mirrored["value"] == 20 and set(mirrored["rounds"]) == {"1", "2"}

    # same parameters and inputs: everything is skipped
    run_pipeline(cfg, output="quiet")
    assert len(_executions(cfg)) == 10

    # a change in one stage's section re-runs that stage and everything downstream of it only
    cfg2 = _cfg(tmp_path, "ares.rounds=2", "answer.r=8")
    run_pipeline(cfg2, output="quiet")
    assert _executions(cfg2)[10:] == ["06_answer_lora 1", "07_evaluation 1"]

    # --force re-runs the selected stages
    run_pipeline(cfg2, stages=["01_data"], force=True, output="quiet")
    assert _executions(cfg2)[-1] == "01_data 1"

    # a failing notebook stops the run, names the cell and the error, and records it
    (paths.run_dir / "fail_02_baseline").touch()
    with pytest.raises(RunError) as e:
        run_pipeline(cfg2, output="quiet")
    assert "02_baseline" in str(e.value) and "boom in 02_baseline" in str(e.value)
    assert 'raise ValueError("boom in 02_baseline")' in str(e.value)
    manifest = read_json(paths.manifest)
    assert manifest["stages"]["02_baseline"]["status"] == "failed"
    # and it resumes there once fixed: 01 is not repeated (its upstream-independent key is unchanged)
    (paths.run_dir / "fail_02_baseline").unlink()
    n = len(_executions(cfg2))
    run_pipeline(cfg2, output="quiet")
    assert _executions(cfg2)[n] == "02_baseline 1"
    assert "01_data 1" not in _executions(cfg2)[n:]


SAY_BODY = """
from aresnb.progress import say
print("a cell output the terminal does not show")
say("progress of {stage}")
"""


@pytest.mark.slow
def test_the_terminal_shows_step_lines_and_the_stages_progress_lines_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", write_stage_notebooks(tmp_path / "nb", SAY_BODY))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    run_pipeline(_cfg(tmp_path), stages=["01_data", "02_baseline"])
    out = capsys.readouterr().out.splitlines()
    start = out.index("[aresnb] [1/2] 01_data: running 01_data.ipynb (Data)")
    assert out[start + 1] == "    progress of 01_data"
    assert out[start + 2].startswith("[aresnb] [1/2] 01_data: done in ")
    assert not any("cell output" in line or "Executing" in line for line in out)
    run_pipeline(_cfg(tmp_path), stages=["01_data"], force=True, output="quiet")
    assert not any("progress of" in line for line in capsys.readouterr().out.splitlines())
def test_a_notebook_edit_reruns_its_stage_and_what_follows_but_a_resave_does_not(tmp_path, fake_notebooks,
                                                                                 monkeypatch):
    import nbformat

    executed = []
    monkeypatch.setattr(runner, "execute_notebook",  # the schedule and skipping only: no kernel
                        lambda nb, out, parameters, **kw: executed.append(f"{nb.stem} {parameters['round_index']}"))
    cfg = _cfg(tmp_path)
    run_pipeline(cfg, output="quiet")
    assert len(executed) == 7
    run_pipeline(cfg, output="quiet")
    assert len(executed) == 7  # nothing changed: everything skipped

    nb_path = fake_notebooks / "04_ppo.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells[1].source += "\nprint('edited')"
    nbformat.write(nb, nb_path)
    run_pipeline(cfg, output="quiet")
    assert executed[7:] == ["04_ppo 1", "05_correction_sft 1", "06_answer_lora 1", "07_evaluation 1"]

    # saved again from Jupyter: outputs, execution counts and metadata change, the code does not
    nb = nbformat.read(fake_notebooks / "05_correction_sft.ipynb", as_version=4)
    nb.cells[1].execution_count = 3
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hello\n")]
    nb.metadata["widgets"] = {"state": {}}
    nbformat.write(nb, fake_notebooks / "05_correction_sft.ipynb")
    run_pipeline(cfg, output="quiet")
    assert len(executed) == 11


@pytest.mark.slow
def test_stage_needing_an_unfinished_upstream_is_refused(tmp_path, fake_notebooks):
    cfg = _cfg(tmp_path)
    with pytest.raises(RunError, match="needs 01_data"):
        run_pipeline(cfg, stages=["03_teacher_scores"], output="quiet")


def test_cli_refuses_bad_parameters_with_exit_code_2_before_creating_anything(tmp_path, capsys):
    out = tmp_path / "outputs"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"run:\n  output_dir: {out}\n  name: bad\nppo:\n  lr: fast\n")
    assert cli.main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "ppo.lr" in err and str(bad) in err
    good = tmp_path / "good.yaml"
    good.write_text(f"run:\n  output_dir: {out}\n  name: bad\n")
    assert cli.main(["run", str(good), "--set", "ppo.lr=fast"]) == 2
    assert "--set ppo.lr=fast" in capsys.readouterr().err
    assert not out.exists()  # refused before any work: no run folder, manifest or lock


def test_committed_notebooks_have_no_outputs_and_a_parameters_cell():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebooks committed"
    for path in notebooks:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert not any(c.get("outputs") for c in code), f"{path.name} has outputs"
        assert not any(c.get("execution_count") for c in code), f"{path.name} has execution counts"
        assert "parameters" in code[0].get("metadata", {}).get("tags", []), f"{path.name}: first code cell is not tagged parameters"
        long_cells = [i for i, c in enumerate(code) if len("".join(c["source"]).splitlines()) > 15]
        assert not long_cells, f"{path.name}: code cells {long_cells} are longer than 15 lines (move them into aresnb/)"
