"""The embedded synthetic set: ScienceQA-format problems about rendered images, generated per run seed."""

from __future__ import annotations

from typing import Any

from ..registry import Dataset, Folders


def read(d: Any, seed: int, folders: Folders) -> tuple[dict[str, list[dict]], dict, str]:
    # deferred, as in every record here: see the package's doc
    from ..scienceqa import load_scienceqa_dir
    from ..synthetic import write_synthetic_scienceqa

    s = d.synthetic
    raw_dir = write_synthetic_scienceqa(folders.generated, s.n_train, s.n_val, s.n_test, s.image_size, seed=seed,
                                        wrong_fact_rate=s.wrong_fact_rate)
    rows, stats = load_scienceqa_dir(raw_dir, d.missing_image)
    return rows, stats, f"synthetic (seed {seed}) at {raw_dir}"


DATASET = Dataset(
    name="synthetic",
    title="synthetic ScienceQA-format problems (answers depend on the images)",
    read=read,
    generated=True,
)
