"""Stage 01: load (or generate) the problems into one schema, extract vision features.

Writes ``01_data/dataset/`` (a ``datasets.DatasetDict``), ``01_data/features/<split>.npy`` (row i
belongs to row i of the split) and ``summary.json``. Every later stage reads them through
:func:`aresnb.stages.driver.load_problems` and :func:`~aresnb.stages.driver.load_features`.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from aresnb.config import Config
from aresnb.data import registry as dataset_registry
from aresnb.data.features import open_extractor
from aresnb.data.mmcot_files import PrecomputedFeatures, apply_captions, read_captions
from aresnb.data.prompts import build_source, build_target, load_length_tokenizer, token_lengths
from aresnb.data.registry import Folders
from aresnb.data.schema import SPLITS, category_counts, to_dataset_dict
from aresnb.data.splits import check_splits
from aresnb.io import read_json
from aresnb.paths import DATA, RunPaths
from aresnb.progress import say
from aresnb.stages.driver import StageRun, drive, load_features, load_problems

STAGE = DATA


# ---- the stage ---------------------------------------------------------------------------------


def read_problems(cfg: Config, paths: RunPaths) -> tuple[dict[str, list[dict]], dict, str]:
    """Rows per split from the configured dataset's record -> (rows, {"skipped", "zero_filled"}, source description)."""
    folders = Folders(generated=paths.synthetic_raw_dir, downloads=paths.hub_images_dir)
    return dataset_registry.dataset(cfg.data).read(cfg.data, cfg.run.seed, folders)


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


def run(cfg: Config, paths: RunPaths, round_index: int | None = None) -> dict:
    """Write the dataset, the features of every split and ``summary.json``; return the summary."""
    return drive(cfg, paths, STAGE, _write_data)


def _write_data(run: StageRun) -> dict:
    cfg, paths = run.cfg, run.paths
    t0 = time.time()
    rows, stats, source = read_problems(cfg, paths)
    captions = read_captions(cfg.data.captions_file) if cfg.data.captions_file else None
    for i, split in enumerate(SPLITS):
        rows[split] = subsample(rows.get(split, []), cfg.data.max_per_split, cfg.run.seed + i)
        if captions is not None:  # MM-CoT's instruct_captions.json instead of the dataset's own
            rows[split] = apply_captions(rows[split], captions)
        if not cfg.data.use_caption:  # prompts append the caption when present: drop it here, once
            rows[split] = [dict(r, caption="") for r in rows[split]]
    check_splits(rows, allow_overlap=cfg.data.allow_overlap, source=source)
    precomputed = None
    if cfg.data.features_file:  # MM-CoT's features: checked against every split before anything is written
        precomputed = PrecomputedFeatures(cfg.data.features_file, cfg.data.name_map, cfg.data.features_shape)
        precomputed.check_coverage(rows)
    ds = to_dataset_dict(rows)
    if paths.dataset_dir.exists():
        shutil.rmtree(paths.dataset_dir)
    with _quiet_progress():
        ds.save_to_disk(str(paths.dataset_dir))
    t_load = time.time() - t0

    f = cfg.features
    cache_dir = Path(f.cache_dir) if f.cache_dir else paths.feature_cache_dir
    extractor = precomputed or open_extractor(f, paths.vision_model_dir, cache_dir, seed=cfg.run.seed)
    feature_stats: dict[str, int] = {}  # the extractor's counts (images, cache hits, computed), or the file's rows / zeros
    P, D = extractor.feature_shape
    for split in SPLITS:
        out = paths.features_file(split)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.stem + ".partial.npy")  # renamed when complete: no half-written file
        feats = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(f.dtype), shape=(len(rows[split]), P, D))
        if precomputed:
            precomputed.fill(rows[split], out=feats)
        else:
            extractor.extract([r["image"] for r in rows[split]], out=feats)
        feats.flush()
        del feats
        tmp.replace(out)
        for k, n in extractor.last_stats.items():
            feature_stats[k] = feature_stats.get(k, 0) + n

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
        "feature_model": extractor.model_id if precomputed or f.model != "tiny" else f"tiny ViT ({paths.vision_model_dir})",
        "feature_cache": feature_stats,
        "load_time_s": round(t_load, 2),
    }
    say(f"data: {source.split(' at ')[0]}, " + " / ".join(f"{n} {s}" for s, n in summary["problems"].items())
        + f" problems; image features {tuple(summary['feature_shape'])} per problem")
    return summary


# ---- what the notebook shows -------------------------------------------------------------------


def pick_examples(dataset: datasets.Dataset, n: int = 4, seed: int = 0) -> list[dict]:
    """A few problems to look at: image problems first (about half), then text and no-context ones."""
    rows = dataset.to_list()
    rng = random.Random(seed)
    with_image = [r for r in rows if r["image"]]
    without = [r for r in rows if not r["image"]]
    k = min(len(with_image), max(1, n // 2)) if with_image else 0
    return rng.sample(with_image, k) + rng.sample(without, min(len(without), n - k))


@dataclass(frozen=True)
class DataResult:
    """Stage 01 finished: what notebook 01 shows."""

    summary: dict
    dataset: datasets.DatasetDict
    examples: list[dict]  # a few train problems with their QCM-E source and target
    lengths: dict  # prompt lengths of the train split, in length_unit
    length_unit: str  # "Flan-T5 tokens" when ../shared has the tokenizer, else "words"
    train_features: dict  # shape, dtype, rows with image features, all-zero rows


def load(cfg: Config, paths: RunPaths, round_index: int | None = None) -> DataResult:
    """The finished stage: summary, dataset, a few examples with their QCM-E prompts, prompt
    lengths (Flan-T5 tokens when ../shared has the tokenizer, else words) and the train features."""
    ds = load_problems(paths)
    examples = pick_examples(ds["train"], n=4, seed=cfg.run.seed)
    tokenizer = load_length_tokenizer()
    features = load_features(paths, "train")
    train = ds["train"]
    has = np.array(train["has_image"], dtype=bool) & ~np.array(train["features_zeroed"], dtype=bool)
    return DataResult(
        summary=read_json(paths.summary_file(STAGE)),
        dataset=ds,
        examples=[{**p, "source": build_source(p, "QCM-E"), "target": build_target(p, "QCM-E")} for p in examples],
        lengths=token_lengths(train.to_list(), "QCM-E", tokenizer),
        length_unit="Flan-T5 tokens" if tokenizer else "words",
        train_features={"shape": list(features.shape), "dtype": str(features.dtype),
                        "rows_with_image_features": int(has.sum()),
                        "zero_rows": int((~features.any(axis=(1, 2))).sum())},
    )
