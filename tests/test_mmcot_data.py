"""MM-CoT's data files: its precomputed features (a features file + name_map.json) and its captions
(instruct_captions.json), read by aresnb.data.mmcot_files and by stage 01; bad files fail naming the
qid or the key. The files are written here in MM-CoT's formats (random values, tiny dims)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aresnb.config import load_config
from aresnb.data.mmcot_files import PrecomputedFeatures, apply_captions, read_captions, read_name_map
from aresnb.data.schema import DataError
from aresnb.data.scienceqa import load_scienceqa_dir
from aresnb.paths import RunPaths
from aresnb.stages import data as data_stage
from aresnb.stages.driver import load_features, load_problems

from conftest import shared_path

P, D = 5, 8


def problem(qid: str, has_image: bool) -> dict:
    return {"qid": qid, "has_image": has_image, "caption": "old"}


def write_features(tmp_path, rows: dict[str, int], n: int | None = None, npy: bool = False, seed: int = 0):
    """A (n, P, D) features file and a name map {qid: row} whose rows are numeric strings, as MM-CoT's."""
    n = n if n is not None else max(rows.values(), default=-1) + 1
    table = torch.randn(n, P, D, generator=torch.Generator().manual_seed(seed))
    file = tmp_path / ("vit.npy" if npy else "vit.pth")
    np.save(file, table.numpy()) if npy else torch.save(table, file)
    (tmp_path / "name_map.json").write_text(json.dumps({q: str(r) for q, r in rows.items()}))
    return file, tmp_path / "name_map.json", table


@pytest.mark.parametrize("npy", [False, True], ids=["torch", "npy"])
def test_rows_by_name_map_and_zeros_without_a_row(tmp_path, npy):
    file, name_map, table = write_features(tmp_path, {"10": 2, "11": 0, "12": 1}, npy=npy)
    rows = [problem("11", True), problem("13", False), problem("10", True), problem("12", False)]
    feats = PrecomputedFeatures(file, name_map, expected_shape=[P, D])
    feats.check_coverage({"train": rows})
    out = feats.fill(rows, np.full((4, P, D), 7.0, dtype=np.float16))
    assert feats.feature_shape == (P, D)
    assert np.array_equal(out[0], table[0].numpy().astype(np.float16))
    assert np.array_equal(out[2], table[2].numpy().astype(np.float16))
    # no image and no row: zeros (MM-CoT); no image but a row (a choice-image folder): the row, as MM-CoT
    assert not out[1].any() and np.array_equal(out[3], table[1].numpy().astype(np.float16))
    assert feats.last_stats == {"images": 2, "rows": 3, "zeros": 1}


def test_a_problem_with_an_image_but_no_row_is_an_error_listing_the_qids(tmp_path):
    file, name_map, _ = write_features(tmp_path, {"1": 0})
    feats = PrecomputedFeatures(file, name_map)
    rows = {"train": [problem("1", True), problem("7", True)], "test": [problem("9", True), problem("4", False)]}
    with pytest.raises(DataError, match=r"2 problem\(s\) with an image have no row.*qids 7, 9 \(2\)"):
        feats.check_coverage(rows)


@pytest.mark.parametrize("rows, n, shape, fragment", [
    ({"3": "x"}, 2, None, "qid '3' maps to 'x'"),
    ({"3": 0, "8": 5}, 2, None, r"rows beyond the 2 .* qids 8 \(1\)"),
    ({"3": 0}, 2, [145, 1024], r"rows of shape \(5, 8\), but data.features_shape is \(145, 1024\)"),
])
def test_bad_name_maps_and_shapes_fail_naming_the_qid(tmp_path, rows, n, shape, fragment):
    file, _, _ = write_features(tmp_path, {}, n=n)
    (tmp_path / "name_map.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match=fragment):
        PrecomputedFeatures(file, tmp_path / "name_map.json", expected_shape=shape)


def test_a_features_file_that_is_not_one_table_fails(tmp_path):
    torch.save({"features": torch.zeros(2, P, D)}, tmp_path / "dict.pth")
    (tmp_path / "name_map.json").write_text("{}")
    with pytest.raises(DataError, match="expected one tensor"):
        PrecomputedFeatures(tmp_path / "dict.pth", tmp_path / "name_map.json")
    torch.save(torch.zeros(2, D), tmp_path / "flat.pth")
    with pytest.raises(DataError, match=r"expected a \(rows, patches, dim\) array, got shape \(2, 8\)"):
        PrecomputedFeatures(tmp_path / "flat.pth", tmp_path / "name_map.json")
    assert read_name_map(tmp_path / "name_map.json") == {}


def test_captions_replace_every_problems_caption(tmp_path):
    (tmp_path / "instruct_captions.json").write_text(json.dumps({"captions": {"1": "A map of Ohio.", "5": "A cat."}}))
    captions = read_captions(tmp_path / "instruct_captions.json")
    rows = apply_captions([problem("1", True), problem("2", True), problem("5", False)], captions)
    assert [r["caption"] for r in rows] == ["A map of Ohio.", "", "A cat."]  # MM-CoT: captions.get(qid, "")


@pytest.mark.parametrize("content, fragment", [
    ({"caption": {"1": "x"}}, r"no key 'captions' \(keys \['caption'\]\)"),
    (["1", "x"], "no key 'captions' \\(list\\)"),
    ({"captions": ["x"]}, "key 'captions' must map qids to texts"),
    ({"captions": {"1": "ok", "2": 3, "9": None}}, r"captions of qids 2, 9 \(2\) are not strings"),
])
def test_a_malformed_captions_file_fails_naming_the_key(tmp_path, content, fragment):
    (tmp_path / "c.json").write_text(json.dumps(content))
    with pytest.raises(DataError, match=fragment):
        read_captions(tmp_path / "c.json")


# ---- stage 01 on the real ScienceQA layout -----------------------------------------------------


def mini_run(tmp_path, *extra: str):
    mini = shared_path("data", "scienceqa-mini")
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=mini", "data.source=scienceqa",
                             f"data.path={mini}", "data.missing_image=zeros", *extra])
    return cfg, RunPaths(cfg)


def test_stage_01_reads_mmcot_features_and_captions(tmp_path):
    mini = shared_path("data", "scienceqa-mini")
    rows, _ = load_scienceqa_dir(mini, "zeros")
    with_image = [r["qid"] for split in rows.values() for r in split if r["has_image"]]
    files = tmp_path / "mmcot"
    files.mkdir()
    # every image problem has a row; one text-only problem too (MM-CoT's name map lists choice-image folders)
    text_only = next(r["qid"] for r in rows["train"] if not r["has_image"])
    file, name_map, table = write_features(files, {q: i for i, q in enumerate([*with_image, text_only])}, seed=3)
    (files / "instruct_captions.json").write_text(json.dumps({"captions": {q: f"InstructBLIP sees {q}." for q in with_image}}))
    cfg, paths = mini_run(tmp_path, f"data.features_file={file}", f"data.name_map={name_map}",
                          f"data.captions_file={files / 'instruct_captions.json'}", f"data.features_shape=[{P}, {D}]")
    summary = data_stage.run(cfg, paths)
    index = {q: i for i, q in enumerate([*with_image, text_only])}
    assert summary["feature_shape"] == [P, D] and summary["feature_model"].startswith("precomputed vit.pth")
    assert summary["feature_cache"] == {"images": len(with_image), "rows": len(index), "zeros": 150 - len(index)}
    ds = load_problems(paths)
    for split in ("train", "val", "test"):
        feats = load_features(paths, split)
        for i, p in enumerate(ds[split]):
            want = table[index[p["qid"]]].numpy() if p["qid"] in index else np.zeros((P, D), np.float32)
            assert np.array_equal(feats[i], want), p["qid"]
            assert p["caption"] == (f"InstructBLIP sees {p['qid']}." if p["has_image"] else "")


def test_stage_01_fails_before_writing_when_an_image_problem_has_no_row(tmp_path):
    mini = shared_path("data", "scienceqa-mini")
    rows, _ = load_scienceqa_dir(mini, "zeros")
    with_image = [r["qid"] for split in rows.values() for r in split if r["has_image"]]
    file, name_map, _ = write_features(tmp_path, {q: i for i, q in enumerate(with_image[2:])})
    cfg, paths = mini_run(tmp_path / "out", f"data.features_file={file}", f"data.name_map={name_map}")
    with pytest.raises(DataError, match=f"qids {with_image[0]}, {with_image[1]} \\(2\\)"):
        data_stage.run(cfg, paths)
    assert not paths.dataset_dir.exists() and not paths.features_file("train").exists()


def test_mmcot_parameters_fail_before_work_starts(tmp_path):
    from aresnb.pipeline import preflight
    from aresnb.config import ConfigError

    with pytest.raises(ConfigError, match="data.features_file and data.name_map go together"):
        load_config(None, ["data.features_file=vit.pth"])
    with pytest.raises(ConfigError, match=r"data.features_shape must be \[patches, dim\]"):
        load_config(None, ["data.features_shape=[145]"])
    with pytest.raises(ConfigError, match="baseline.train is false but model.init_from is not set"):
        load_config(None, ["baseline.train=false"])
    cfg = load_config(None, [f"data.features_file={tmp_path / 'vit.pth'}", f"data.name_map={tmp_path / 'nm.json'}",
                             f"data.captions_file={tmp_path / 'c.json'}", f"model.init_from={tmp_path / 'mm-cot'}",
                             "baseline.train=false"])
    problems = preflight.path_problems(cfg, ["01_data", "02_baseline"], tmp_path)
    assert [p.split(":")[0] for p in problems] == ["data.features_file", "data.name_map", "data.captions_file",
                                                   "model.init_from"]
    assert preflight.path_problems(cfg, ["03_teacher_scores"], tmp_path) == []  # only the stages that read them


def test_a_legacy_torch_features_file_loads_without_memory_mapping(tmp_path):
    table = torch.randn(3, P, D)
    torch.save(table, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    (tmp_path / "name_map.json").write_text(json.dumps({"1": "2"}))
    feats = PrecomputedFeatures(tmp_path / "old.pth", tmp_path / "name_map.json")
    out = feats.fill([problem("1", True)], np.zeros((1, P, D), np.float32))
    assert np.array_equal(out[0], table[2].numpy())
