"""Answer accuracy: by ScienceQA category per model and format, and the tables of a run.

Columns: NAT / SOC / LAN by subject, TXT (non-empty hint), IMG (an image), NO (neither),
G1-6 / G7-12 by grade, Avg over all problems; percent, as the paper prints them.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import pandas as pd

from aresnb.paper_numbers import ACCURACY_COLUMNS, CATEGORIES


def accuracy_by_category(rows: list[dict]) -> dict[str, float | None]:
    """Accuracy in percent per column (NAT SOC LAN TXT IMG NO G1-6 G7-12 Avg); None if a column is empty.

    Each row needs ``correct`` (bool) and ``categories`` (the columns its problem counts in).
    """
    out: dict[str, float | None] = {}
    for col in CATEGORIES:
        hits = [bool(r["correct"]) for r in rows if col in r["categories"]]
        out[col] = 100.0 * sum(hits) / len(hits) if hits else None
    out["Avg"] = 100.0 * sum(bool(r["correct"]) for r in rows) / len(rows) if rows else None
    return out


def heads_table(accuracy: Mapping[str, Mapping[str, Mapping[str, float | None]]]) -> pd.DataFrame:
    """{model: {format: {col: acc}}} -> one row per (model, format); columns nobody has dropped."""
    cols = [c for c in ACCURACY_COLUMNS if any(v.get(c) is not None for f in accuracy.values() for v in f.values())]
    return pd.DataFrame([{"model": m, "format": fmt, **{c: acc.get(c) for c in cols}}
                         for m, by_fmt in accuracy.items() for fmt, acc in by_fmt.items()])


ARM_LABELS = {"rl_only": "RL only (no correction SFT)", "correction_only": "Correction SFT only (no RL)"}


def model_label(name: str, rounds: int) -> str:
    """Display name of a model key of the run: 'baseline', 'round_<i>' (the last one is ARES), 'ares',
    an ablation arm ('rl_only', 'correction_only')."""
    if name == "baseline":
        return "Baseline"
    if name in ARM_LABELS:
        return ARM_LABELS[name]
    if name in ("ares", f"round_{rounds}"):
        return f"ARES (round {rounds})"
    m = re.fullmatch(r"round_(\d+)", name)
    return f"Round {m.group(1)}" if m else name


def accuracy_table(summary06: Mapping[str, Any], rounds: int,
                   paper_rows: Mapping[str, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """Rows (model, format) x columns NAT..G7-12, Avg in percent; then ``paper_rows`` ({label:
    {category: %}}, the dataset record's ``reference_accuracy``), if any, as QCMG-A rows."""
    acc = summary06.get("accuracy")
    if not isinstance(acc, Mapping) or not acc:
        raise ValueError("06_answer_lora/summary.json: no 'accuracy' mapping {model: {format: {NAT..Avg}}}")
    rows = []
    for name, by_format in acc.items():
        if not isinstance(by_format, Mapping):
            raise ValueError(f"06_answer_lora/summary.json: accuracy[{name!r}] is not a mapping of formats")
        for fmt, cats in by_format.items():
            if not isinstance(cats, Mapping):
                raise ValueError(f"06_answer_lora/summary.json: accuracy[{name!r}][{fmt!r}] is not a mapping")
            rows.append({"model": model_label(name, rounds), "key": name, "format": fmt,
                         **{c: cats.get(c) for c in ACCURACY_COLUMNS}})
    df = pd.DataFrame(rows)
    values = df[list(ACCURACY_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    # Tables show percent like the paper; convert a summary that reports fractions.
    if "%" not in str(summary06.get("metric", "%")) and values.max().max() <= 1.0:
        values = values * 100.0
    df[list(ACCURACY_COLUMNS)] = values
    order = {"baseline": 0}
    df["_o"] = [order.get(k, 1 if k in ("ares", f"round_{rounds}") else 2) for k in df["key"]]
    df = df.sort_values(["_o", "key", "format"], kind="stable").drop(columns="_o")
    df["source"] = "this run"
    if paper_rows:
        paper = pd.DataFrame([{"model": label, "key": "paper", "format": "QCMG-A", "source": "paper", **cats}
                              for label, cats in paper_rows.items()])
        df = pd.concat([df, paper], ignore_index=True)
    return df.reset_index(drop=True)[["model", "format", "source", *ACCURACY_COLUMNS, "key"]]


def accuracy_gain(table: pd.DataFrame, rounds: int) -> dict[str, float]:
    """{format: ARES Avg - baseline Avg} in points, for formats both models have."""
    ours = table[table["source"] == "this run"]
    base = ours[ours["key"] == "baseline"].set_index("format")["Avg"]
    ares = ours[ours["key"].isin(["ares", f"round_{rounds}"])].set_index("format")["Avg"]
    return {f: float(ares[f] - base[f]) for f in base.index if f in ares.index and pd.notna(ares[f] - base[f])}
