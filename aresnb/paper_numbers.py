"""The paper's reference numbers (Byun et al. 2024, ARES; MM-CoT v1), as data.

Source: /work/shared/design/ares.md section 6. Percentages, as the paper prints them. These sit
beside a run's own numbers in the tables of paper-scale runs; nothing here is ever used as a
result of ours.
"""

from __future__ import annotations

CATEGORIES = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")
ACCURACY_COLUMNS = (*CATEGORIES, "Avg")

# Win rate of ARES over the baseline (MM-CoT) judged by GPT-4o, one random order per item:
# the share of items on which ARES's rationale was preferred.
WIN_RATE = {
    ("scienceqa", "base"): 69.76,
    ("scienceqa", "large"): 73.76,
    ("aokvqa", "base"): 69.11,
    ("aokvqa", "large"): 66.96,
}

# MM-CoT v1 rationale model + answer model, ScienceQA test accuracy by category.
MMCOT_SCIENCEQA_ACCURACY = {
    "base": {"NAT": 87.52, "SOC": 77.17, "LAN": 85.82, "TXT": 87.88, "IMG": 82.90,
             "NO": 86.83, "G1-6": 84.65, "G7-12": 85.37, "Avg": 84.91},
    "large": {"NAT": 95.91, "SOC": 82.00, "LAN": 90.82, "TXT": 95.26, "IMG": 88.80,
              "NO": 92.89, "G1-6": 92.44, "G7-12": 90.31, "Avg": 91.68},
}

# "+2.5% answer accuracy on average" of ARES over the baseline (percentage points).
ARES_MEAN_ACCURACY_GAIN = 2.5

JUDGE = "gpt-4o"


def model_size(base_model: str) -> str | None:
    """'base' / 'large' from a hub id such as declare-lab/flan-alpaca-base; None for tiny models."""
    name = base_model.lower().rstrip("/").split("/")[-1]
    for size in ("large", "base"):
        if name.endswith(size) or f"-{size}" in name:
            return size
    return None


def reference_win_rate(source: str, base_model: str) -> float | None:
    """The paper's win rate (%) for this dataset and model size, or None when there is none."""
    size = model_size(base_model)
    return WIN_RATE.get((source, size)) if size else None


def reference_accuracy(source: str, base_model: str) -> dict[str, dict[str, float]]:
    """Paper rows for the accuracy table: {label: {category: %}}; empty when not comparable."""
    if source != "scienceqa":
        return {}
    sizes = [model_size(base_model)] if model_size(base_model) else ["base", "large"]
    return {f"MM-CoT {s.capitalize()} (paper)": dict(MMCOT_SCIENCEQA_ACCURACY[s]) for s in sizes}
