"""Stage 01: load (or generate) the problems, extract vision features, write summary.json."""

from __future__ import annotations

import contextlib
import random
import shutil
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from ..paths import RunPaths, write_summary
from .schema import SPLITS, DataError, category_counts, to_dataset_dict
from .splits import check_splits

STAGE = "01_data"


def load_problems(paths: RunPaths) -> datasets.DatasetDict:
    """The DatasetDict (train/val/test) stage 01 wrote."""
    if not (paths.dataset_dir / "dataset_dict.json").exists():
        raise FileNotFoundError(f"no dataset at {paths.dataset_dir}: run stage 01 (notebooks/01_data.ipynb) first")
    return datasets.load_from_disk(str(paths.dataset_dir))


def load_features(paths: RunPaths, split: str) -> np.ndarray:
    """(N, P, D) features of ``split``; row i belongs to row i of ``load_problems(paths)[split]``."""
    file = paths.features_file(split)
    if not file.exists():
        raise FileNotFoundError(f"no features at {file}: run stage 01 (notebooks/01_data.ipynb) first")
    return np.load(file)


def read_problems(cfg: Any, paths: RunPaths) -> tuple[dict[str, list[dict]], dict, str]:
    """Rows per split from the configured source -> (rows, {"skipped", "zero_filled"}, source description)."""
    d, stage_dir = cfg.data, paths.run_dir / STAGE
    if d.source == "synthetic":
        from .scienceqa import load_scienceqa_dir
        from .synthetic import write_synthetic_scienceqa

        s = d.synthetic
        raw_dir = write_synthetic_scienceqa(stage_dir / "synthetic_raw", s.n_train, s.n_val, s.n_test,
                                            s.image_size, seed=cfg.run.seed)
        rows, stats = load_scienceqa_dir(raw_dir, d.missing_image)
        return rows, stats, f"synthetic (seed {cfg.run.seed}) at {raw_dir}"
    if d.source == "scienceqa":
        from .scienceqa import load_scienceqa_dir, load_scienceqa_hub

        if d.path:
            rows, stats = load_scienceqa_dir(d.path, d.missing_image)
            return rows, stats, f"scienceqa dir {d.path}"
        rows, stats = load_scienceqa_hub(d.hub_id, stage_dir / "hub_images", d.missing_image)
        return rows, stats, f"scienceqa hub {d.hub_id}"
    if d.source == "aokvqa":
        from .aokvqa import load_aokvqa_dir, load_aokvqa_hub

        if d.path:
            rows, stats = load_aokvqa_dir(d.path, d.image_dir, d.missing_image, seed=cfg.run.seed)
            return rows, stats, f"aokvqa dir {d.path} (images {d.image_dir})"
        rows, stats = load_aokvqa_hub(d.hub_id, stage_dir / "hub_images", d.missing_image, seed=cfg.run.seed)
        return rows, stats, f"aokvqa hub {d.hub_id}"
    raise DataError(f"unknown data.source {d.source!r}")


def subsample(rows: list[dict], n: int | None, seed: int) -> list[dict]:
    """At most ``n`` rows, a seeded sample kept in the original order."""
    if n is None or len(rows) <= n:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


@contextlib.contextmanager
def _quiet_progress():
    """No per-split 'Saving the dataset' bars in the notebook; restores the previous setting."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def run_data_stage(cfg: Any, paths: RunPaths) -> dict:
    """Write ``01_data/dataset``, ``01_data/features/<split>.npy`` and ``summary.json``; return the summary + dataset."""
    from .features import open_extractor

    t0 = time.time()
    stage_dir = paths.stage_dir(STAGE)
    rows, stats, source = read_problems(cfg, paths)
    for i, split in enumerate(SPLITS):
        rows[split] = subsample(rows.get(split, []), cfg.data.max_per_split, cfg.run.seed + i)
        if not cfg.data.use_caption:  # prompts append the caption when present: drop it here, once
            rows[split] = [dict(r, caption="") for r in rows[split]]
    check_splits(rows, allow_overlap=cfg.data.allow_overlap, source=source)
    ds = to_dataset_dict(rows)
    if paths.dataset_dir.exists():
        shutil.rmtree(paths.dataset_dir)
    with _quiet_progress():
        ds.save_to_disk(str(paths.dataset_dir))
    t_load = time.time() - t0

    f = cfg.features
    cache_dir = Path(f.cache_dir) if f.cache_dir else stage_dir / "feature_cache"
    extractor = open_extractor(f, stage_dir / "vision_model", cache_dir, seed=cfg.run.seed)
    feature_stats = {"images": 0, "cache_hits": 0, "computed": 0}
    P, D = extractor.feature_shape
    for split in SPLITS:
        out = paths.features_file(split)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.stem + ".partial.npy")  # renamed when complete: no half-written file
        feats = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(f.dtype), shape=(len(rows[split]), P, D))
        extractor.extract([r["image"] for r in rows[split]], out=feats)
        feats.flush()
        del feats
        tmp.replace(out)
        for k in feature_stats:
            feature_stats[k] += extractor.last_stats[k]

    summary = {
        "stage": STAGE,
        "source": source,
        "problems": {split: len(rows[split]) for split in SPLITS},
        "categories": category_counts(ds),
        "images": {split: sum(bool(r["image"]) for r in rows[split]) for split in SPLITS},
        "skipped": stats["skipped"],
        "zero_filled": stats["zero_filled"],
        "missing_image_policy": cfg.data.missing_image,
        "feature_shape": list(extractor.feature_shape),
        "feature_model": f.model if f.model != "tiny" else f"tiny ViT ({stage_dir / 'vision_model'})",
        "feature_cache": feature_stats,
        "load_time_s": round(t_load, 2),
        "wall_time_s": round(time.time() - t0, 2),
    }
    write_summary(stage_dir, summary)
    return {"summary": summary, "dataset": ds}


def pick_examples(dataset: datasets.Dataset, n: int = 4, seed: int = 0) -> list[dict]:
    """A few problems to look at: image problems first (about half), then text and no-context ones."""
    rows = dataset.to_list()
    rng = random.Random(seed)
    with_image = [r for r in rows if r["image"]]
    without = [r for r in rows if not r["image"]]
    k = min(len(with_image), max(1, n // 2)) if with_image else 0
    return rng.sample(with_image, k) + rng.sample(without, min(len(without), n - k))
