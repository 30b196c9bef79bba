"""MM-CoT / ARES prompt formats (source -> target) and answer extraction.

Formats (whitespace inside every field collapsed to single spaces; fields joined by newlines)::

    QCM-E   Question: {q}\\nContext: {context}\\nOptions: (A) .. (B) ..\\nSolution:
            -> Solution: {solution}
    QCM-LE  same source -> Solution: {lecture} {solution}
    QCM-A   same source ending "Answer:" -> The answer is (B).
    QCMG-A  Question/Context/Options, then "Solution: {rationale}", then "Answer:" -> The answer is (B).

``context`` is the hint, plus the image caption when ``use_caption``, or "N/A" when both are empty.
QCMG-A takes the generated rationale; without one it uses the gold solution (training on gold).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from ..config import PACKAGE_DIR

FORMATS = ("QCM-E", "QCM-LE", "QCM-A", "QCMG-A")
ANSWER_RE = re.compile(r"The answer is \(([A-Z])\)")
option_letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", str(text or "")).strip()


def context_text(problem: dict, use_caption: bool = True) -> str:
    parts = [collapse(problem.get("hint", ""))]
    if use_caption:
        parts.append(collapse(problem.get("caption", "")))
    return " ".join(p for p in parts if p) or "N/A"


def options_text(choices: list[str]) -> str:
    return " ".join(f"({option_letters[i]}) {collapse(c)}" for i, c in enumerate(choices))


_SOLUTION_PREFIX = re.compile(r"^\s*(?:Solution:\s*)?")


def strip_solution_prefix(text: str) -> str:
    """'Solution: xyz' -> 'xyz' (what a rationale model decodes vs. the rationale itself)."""
    return str(text or "")[solution_start(text):].strip()


def solution_start(text: str) -> int:
    """Where the rationale begins inside decoded text: after leading space and "Solution:"."""
    return _SOLUTION_PREFIX.match(str(text or "")).end()


def _check(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; formats are {', '.join(FORMATS)}")


def build_source(problem: dict, fmt: str, rationale: str | None = None, use_caption: bool = True) -> str:
    """The encoder input for ``problem`` in format ``fmt``."""
    _check(fmt)
    lines = [
        f"Question: {collapse(problem['question'])}",
        f"Context: {context_text(problem, use_caption)}",
        f"Options: {options_text(problem['choices'])}",
    ]
    if fmt == "QCMG-A":
        g = strip_solution_prefix(rationale) if rationale is not None else collapse(problem.get("solution", ""))
        lines.append(f"Solution: {collapse(g)}")
    lines.append("Answer:" if fmt.endswith("-A") else "Solution:")
    return "\n".join(lines)


def build_target(problem: dict, fmt: str, rationale: str | None = None) -> str:
    """The decoder target: the gold (or given) rationale for -E/-LE, the answer sentence for -A."""
    _check(fmt)
    if fmt.endswith("-A"):
        return f"The answer is ({option_letters[int(problem['answer'])]})."
    if rationale is not None:
        return f"Solution: {collapse(strip_solution_prefix(rationale))}"
    if fmt == "QCM-LE":
        return collapse(f"Solution: {problem.get('lecture', '')} {problem.get('solution', '')}")
    return collapse(f"Solution: {problem.get('solution', '')}")


def extract_answer(text: str, n_choices: int, rng: random.Random | Any) -> tuple[int, bool]:
    """Index of the option in 'The answer is (X)'; on failure a seeded random option, ok=False.

    ``rng`` is a ``random.Random`` (or anything with ``randrange``), so the fallback is reproducible.
    """
    m = ANSWER_RE.search(str(text or ""))
    if m:
        index = option_letters.index(m.group(1))
        if index < n_choices:
            return index, True
    return int(rng.randrange(n_choices)), False


def token_lengths(problems: list[dict], fmt: str = "QCM-E", tokenizer: Any = None, use_caption: bool = True) -> dict[str, list[int]]:
    """Source and target lengths in tokens (``tokenizer``) or whitespace words when it is None."""
    count = (lambda s: len(tokenizer(s, add_special_tokens=True)["input_ids"])) if tokenizer else (lambda s: len(s.split()))
    return {
        "source": [count(build_source(p, fmt, use_caption=use_caption)) for p in problems],
        "target": [count(build_target(p, fmt)) for p in problems],
    }


def load_length_tokenizer(path: str | None = None):
    """The Flan-T5 tokenizer (../shared/tokenizers/flan-t5 by default) if present, else None (whitespace)."""
    path = Path(path) if path else PACKAGE_DIR.parent.parent / "shared" / "tokenizers" / "flan-t5"
    if not (path / "tokenizer.json").exists():
        return None
    from transformers import AutoTokenizer  # deferred: seconds to import, only when the files exist

    return AutoTokenizer.from_pretrained(str(path))
