"""A-OKVQA (Schwenk et al. 2022): its JSON files with COCO images, or the hub copy; val held out of train."""

from __future__ import annotations

from typing import Any

from ..registry import Dataset, FallbackLengths, Folders


def read(d: Any, seed: int, folders: Folders) -> tuple[dict[str, list[dict]], dict, str]:
    # deferred, as in every record here: see the package's doc
    from ..aokvqa import load_aokvqa_dir, load_aokvqa_hub

    if d.path:
        rows, stats = load_aokvqa_dir(d.path, d.image_dir, d.missing_image, seed=seed)
        return rows, stats, f"aokvqa dir {d.path} (images {d.image_dir})"
    rows, stats = load_aokvqa_hub(d.hub_id, folders.downloads, d.missing_image, seed=seed)
    return rows, stats, f"aokvqa hub {d.hub_id}"


DATASET = Dataset(
    name="aokvqa",
    title="A-OKVQA",
    read=read,
    needs_location=True,
    local_dirs=("image_dir",),
    # not measured here (no sample at hand): short questions, 4 one-word choices, three one-sentence
    # rationales joined, always an image; our val split is a hold-out of train
    fallback=FallbackLengths(splits={"train": 17056 - 1145, "val": 1145, "test": 1145}, question=45, hint=0,
                             choices=(8, 8, 8, 8), solution=200, image_share=1.0),
    metric="multiple-choice accuracy (%)",
    paper_win_rate={"base": 69.11, "large": 66.96},
    paper_accuracy_gain_pts=2.5,
)
