"""What the paper's numbers are indexed by (Byun et al. 2024, ARES; MM-CoT v1).

The numbers themselves belong to a dataset and sit in its record (``aresnb/data/datasets/``:
``paper_win_rate``, ``paper_accuracy``, ``paper_accuracy_gain_pts``; source:
/work/shared/design/ares.md section 6). They sit beside a run's own numbers in the tables of
paper-scale runs; nothing here is ever used as a result of ours.
"""

from __future__ import annotations

CATEGORIES = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")
ACCURACY_COLUMNS = (*CATEGORIES, "Avg")

JUDGE = "gpt-4o"  # the paper's judge of win rates


def model_size(base_model: str) -> str | None:
    """'base' / 'large' from a hub id such as declare-lab/flan-alpaca-base; None for tiny models."""
    name = base_model.lower().rstrip("/").split("/")[-1]
    for size in ("large", "base"):
        if name.endswith(size) or f"-{size}" in name:
            return size
    return None
