"""Stage 01 end to end on a small synthetic config: dataset, features, summary.json."""

import numpy as np
import pytest

from aresnb.config import load_config
from aresnb.data.schema import CATEGORY_COLUMNS
from aresnb.io import read_json
from aresnb.paths import RunPaths
from aresnb.stages import data as data_stage
from aresnb.stages.driver import load_features, load_problems


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(None, [f"run.output_dir={out}", "run.name=data_test", "data.synthetic.n_train=36",
                             "data.synthetic.n_val=24", "data.synthetic.n_test=12", "data.max_per_split=20"])
    paths = RunPaths(cfg)
    data_stage.run(cfg, paths)
    return cfg, paths, data_stage.load(cfg, paths)


def test_stage_outputs(stage):
    cfg, paths, result = stage
    ds = load_problems(paths)
    assert {s: ds[s].num_rows for s in ds} == {"train": 20, "val": 20, "test": 12}
    for split in ds:
        feats = load_features(paths, split)
        assert feats.shape == (ds[split].num_rows, 17, 64)
        has = np.array(ds[split]["has_image"])
        assert not feats[~has].any() and all(f.any() for f in feats[has])
    summary = read_json(paths.summary_file("01_data"))
    assert summary == result.summary
    assert summary["stage"] == "01_data" and summary["wall_time_s"] > 0
    assert summary["problems"] == {"train": 20, "val": 20, "test": 12}
    assert summary["feature_shape"] == [17, 64]
    assert summary["skipped"] == 0 and summary["zero_filled"] == 0
    assert set(CATEGORY_COLUMNS) <= set(summary["categories"]["train"])
    assert (paths.synthetic_raw_dir / "problems.json").exists()
    assert len(result.examples) == 4 and all(e["source"].endswith("Solution:") for e in result.examples)
    assert result.train_features["shape"] == [20, 17, 64]


def test_rerun_hits_feature_cache_and_is_identical(stage):
    cfg, paths, first = stage
    before = load_features(paths, "train")
    again = data_stage.run(cfg, paths)
    assert again["feature_cache"]["computed"] == 0
    np.testing.assert_array_equal(load_features(paths, "train"), before)
    assert load_problems(paths)["train"]["qid"] == first.dataset["train"]["qid"]


def test_use_caption_false_drops_captions(tmp_path):
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "data.synthetic.n_train=12", "data.synthetic.n_val=12",
                             "data.synthetic.n_test=12", "data.use_caption=false"])
    data_stage.run(cfg, RunPaths(cfg))
    assert set(load_problems(RunPaths(cfg))["train"]["caption"]) == {""}


def test_load_before_stage_says_so(tmp_path):
    paths = RunPaths(run_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="run stage 01"):
        load_problems(paths)
    with pytest.raises(FileNotFoundError, match="run stage 01"):
        load_features(paths, "train")
