"""ScienceQA (Lu et al. 2022): a folder in its original layout or the hub copy; the paper's main set."""

from __future__ import annotations

from typing import Any

from ..registry import Dataset, FallbackLengths, Folders


def read(d: Any, seed: int, folders: Folders) -> tuple[dict[str, list[dict]], dict, str]:
    # deferred, as in every record here: see the package's doc
    from ..scienceqa import load_scienceqa_dir, load_scienceqa_hub

    if d.path:
        rows, stats = load_scienceqa_dir(d.path, d.missing_image)
        return rows, stats, f"scienceqa dir {d.path}"
    rows, stats = load_scienceqa_hub(d.hub_id, folders.downloads, d.missing_image)
    return rows, stats, f"scienceqa hub {d.hub_id}"


DATASET = Dataset(
    name="scienceqa",
    title="ScienceQA",
    read=read,
    needs_location=True,
    # means over scienceqa-mini: question 75, hint 135 + caption 21, 2.6 choices of 24, solution 254,
    # 45 % with an image
    fallback=FallbackLengths(splits={"train": 12726, "val": 4241, "test": 4241}, question=75, hint=156,
                             choices=(24, 24, 24), solution=254, image_share=0.45),
    # ARES over MM-CoT judged by GPT-4o, one random order per item (/work/shared/design/ares.md, section 6)
    paper_win_rate={"base": 69.76, "large": 73.76},
    # MM-CoT v1 rationale model + answer model, ScienceQA test accuracy by category
    paper_accuracy={
        "base": {"NAT": 87.52, "SOC": 77.17, "LAN": 85.82, "TXT": 87.88, "IMG": 82.90,
                 "NO": 86.83, "G1-6": 84.65, "G7-12": 85.37, "Avg": 84.91},
        "large": {"NAT": 95.91, "SOC": 82.00, "LAN": 90.82, "TXT": 95.26, "IMG": 88.80,
                  "NO": 92.89, "G1-6": 92.44, "G7-12": 90.31, "Avg": 91.68},
    },
    paper_accuracy_gain_pts=2.5,  # "+2.5% answer accuracy on average"
)
