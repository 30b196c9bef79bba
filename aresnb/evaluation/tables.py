"""Tables on disk: CSV (full precision), Markdown and LaTeX (rounded), from one DataFrame."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd


def _is_number(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _fmt(value: Any, digits: int, missing: str = "–") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return missing
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(df: pd.DataFrame, digits: int = 2) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---:" if _is_number(df[c]) else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v, digits).replace("|", "\\|") for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(df: pd.DataFrame, caption: str, label: str, digits: int = 2) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    align = "".join("r" if _is_number(df[c]) else "l" for c in df.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(_fmt(v, digits, missing="--")) for v in row) + r" \\"
              for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, tables_dir: str | Path, name: str, caption: str, digits: int = 2,
                formats: Sequence[str] = ("csv", "md", "tex")) -> dict[str, str]:
    """``<name>.csv`` (full precision), ``.md`` and ``.tex`` (rounded); returns their paths."""
    tables_dir = Path(tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    out = {fmt: tables_dir / f"{name}.{fmt}" for fmt in formats}
    if "csv" in out:
        df.to_csv(out["csv"], index=False)
    if "md" in out:
        out["md"].write_text(f"**{caption}**\n\n" + to_markdown(df, digits))
    if "tex" in out:
        out["tex"].write_text(to_latex(df, caption, f"tab:{name}", digits))
    return {k: str(v) for k, v in out.items()}
