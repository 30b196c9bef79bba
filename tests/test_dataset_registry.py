"""Datasets are records (aresnb/data/registry.py): config checks data.source against them, and a
dataset kept outside aresnb -- one file, tests/toy_dataset.py -- runs through stages 01-07 on the
tiny settings with nothing in aresnb changed."""

from pathlib import Path

import pytest

from aresnb.config import ConfigError, load_config
from aresnb.data import registry
from aresnb.pipeline.estimate import estimate
from aresnb.pipeline.preflight import path_problems
from aresnb.present.report.facts import run_banner
from aresnb.stages.driver import load_problems
from aresnb.stages.results import read_run
from aresnb.stages.steps import Step, build_schedule, step_key

from conftest import run_every_stage
from test_stages import TINY

TOY_FILE = Path(__file__).with_name("toy_dataset.py")
TOY = ["data.source=toy", f"data.dataset_file={TOY_FILE}"]


def test_the_builtin_datasets_are_the_files_of_the_registry_folder():
    assert registry.builtin_names() == ["aokvqa", "scienceqa", "synthetic"]
    for name in registry.builtin_names():
        assert registry.find(name).name == name
    assert registry.find("synthetic").generated and not registry.find("scienceqa").generated
    assert registry.find("aokvqa").local_dirs == ("image_dir",)


def test_config_checks_data_source_against_the_registry(tmp_path):
    known = r"unknown data.source .sciencqa. \(did you mean .scienceqa.\?\): the datasets are aokvqa, scienceqa, synthetic"
    with pytest.raises(ConfigError, match=known):
        load_config(None, ["data.source=sciencqa"])
    with pytest.raises(ConfigError, match="needs data.path or data.hub_id"):
        load_config(None, ["data.source=scienceqa"])
    with pytest.raises(ConfigError, match="defines dataset 'toy', but data.source is 'synthetic'"):
        load_config(None, [f"data.dataset_file={TOY_FILE}"])
    with pytest.raises(ConfigError, match="dataset_file: file not found"):
        load_config(None, ["data.source=toy", f"data.dataset_file={tmp_path / 'absent.py'}"])
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no DATASET"):
        load_config(None, ["data.source=toy", f"data.dataset_file={empty}"])
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_here\n")
    with pytest.raises(ConfigError, match="broken.py: ModuleNotFoundError: No module named 'no_such_module_here'"):
        load_config(None, ["data.source=toy", f"data.dataset_file={broken}"])
    assert load_config(None, TOY).data.source == "toy"


def test_a_dataset_file_is_imported_as_a_module_is(tmp_path):
    """Dataclasses (and pickle) look a module up in sys.modules: a record file may define them."""
    file = tmp_path / "with_dataclass.py"
    file.write_text("from __future__ import annotations\n"
                    "import dataclasses\n"
                    "from toy_dataset import DATASET as TOY\n\n\n"
                    "@dataclasses.dataclass\n"
                    "class Sizes:\n"
                    "    train: int = 12\n\n\n"
                    "DATASET = dataclasses.replace(TOY, name='toy2')\n")
    assert load_config(None, ["data.source=toy2", f"data.dataset_file={file}"]).data.source == "toy2"


def test_the_dataset_file_is_part_of_the_step_key_of_what_reads_data(tmp_path):
    copy = tmp_path / "toy_dataset.py"
    copy.write_text(TOY_FILE.read_text())
    cfg = load_config(None, ["data.source=toy", f"data.dataset_file={copy}"])
    schedule = build_schedule(1)
    notebook = Path(__file__).parents[1] / "notebooks" / "01_data.ipynb"
    before = step_key(cfg, Step("01_data"), {}, schedule, notebook)
    copy.write_text(TOY_FILE.read_text() + "\n# the loader changed\n")
    assert step_key(cfg, Step("01_data"), {}, schedule, notebook) != before


def test_estimate_and_preflight_ask_the_record(tmp_path):
    cfg = load_config(None, TOY)
    result = estimate(cfg)
    assert result["data"] == "the toy generator (seed 0)"
    assert result["total"].requests > 0
    assert path_problems(cfg, ["01_data"], tmp_path) == []
    moved = load_config(None, ["data.source=toy", f"data.dataset_file={TOY_FILE}"])
    moved.data.dataset_file = str(tmp_path / "gone.py")  # the file went away after the parameters were read
    assert any("data.dataset_file: file not found" in p for p in path_problems(moved, ["01_data"], tmp_path))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """Stages 01-07 on the toy dataset, tiny settings, the local reference Teacher."""
    out = tmp_path_factory.mktemp("toy_run")
    cfg = load_config(None, [f"run.output_dir={out}", "run.name=toy", f"teacher.cache_path={out / 'cache.sqlite'}",
                             *TINY, *TOY])
    paths, done = run_every_stage(cfg)
    return cfg, paths, done


def test_a_dataset_from_one_file_runs_through_every_stage(toy_run):
    cfg, paths, done = toy_run
    assert done["01"]["source"].startswith("toy sums (seed 0)")
    assert done["01"]["problems"] == {"train": 12, "val": 4, "test": 4}
    problems = load_problems(paths)
    assert set(problems["test"]["qid"]) == {f"toy-test-{i}" for i in range(4)}
    assert sum(problems["train"]["has_image"]) == 6  # every other problem has its picture
    s03 = done["03"]
    assert s03["scored"] + s03["dropped"] == s03["samples"] > 0
    assert done["04"]["optimizer_steps"] == done["04"]["expected_optimizer_steps"] > 0
    assert done["05"]["corrected"] + done["05"]["unchanged"] + done["05"]["fallback"] == done["05"]["n_problems"] > 0
    assert done["06"]["metric"] == "accuracy (%) of toy sums"  # the record's metric, not ScienceQA's
    assert set(done["06"]["accuracy"]) == {"baseline", "ares"}
    assert done["07"]["counts"]["n"] == 4
    assert done["07"]["paper_win_rate"] is None and done["07"]["paper_accuracy_gain_pts"] is None
    kind, text = run_banner(read_run(paths), cfg.to_dict())
    assert kind == "smoke" and text.startswith("Smoke check, not the paper's scale: toy sums in words (12 / 4 / 4")
