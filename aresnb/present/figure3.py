"""A static page of chosen examples, baseline vs ARES, in the manner of the paper's Figure 3.

One self-contained HTML file (images inlined as base64, no scripts, no network), written where
its caller says (stage 05's notebook: ``<run>/figures/rationale_examples.html``): for each example
the problem, its image, and the baseline's and ARES's rationales side by side with word-level
differences and Teacher scores. A function of the test split's
:class:`aresnb.stages.results.RationaleSources` (``read_rationales``); the scores the run did not
store come from the ``scorer`` it is handed (stage 05's ``teacher_callbacks``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from aresnb.present.widgets.rationale_panel import Column, comparison_html, image_data_url, page_html, problem_columns
from aresnb.stages.results import RationaleSources
from aresnb.text.rationale_metrics import word_edit_distance


def pick_examples(sources: RationaleSources, n: int, seed: int = 0) -> list[str]:
    """qids where baseline and ARES differ most (problems with images first), seeded tie-break."""
    base, ares = sources.texts.get("baseline", {}), sources.texts.get("ARES", {})
    qids = [q for q in sources.problems if q in base and q in ares]
    rng = random.Random(seed)
    jitter = {q: rng.random() for q in qids}

    def key(q: str):
        has_image = bool(sources.problems[q].get("has_image"))
        return (-has_image, -word_edit_distance(base[q], ares[q]), jitter[q])

    return sorted(qids, key=key)[:n]


def example_columns(sources: RationaleSources, qid: str,
                    scorer: Optional[Callable[[Mapping, str], Optional[list]]] = None) -> list[Column]:
    """Baseline and ARES columns of one problem; ARES is diffed against the baseline."""
    by_name = {c.name: c for c in problem_columns(sources, qid, compare="none", scorer=scorer)}
    baseline, ares = by_name["baseline"], by_name["ARES"]
    baseline.note = "MM-CoT baseline (SFT on the dataset's rationales)"
    ares.reference = baseline.text
    ares.note = (ares.note + "; " if ares.note else "") + "differences vs baseline"
    return [baseline, ares]


def figure3_html(examples: Sequence[tuple[Mapping, list[Column], Optional[str]]],
                 title: str = "Rationales: baseline vs ARES") -> str:
    """The whole page from (problem, columns, image data URL) triples (pure)."""
    body = "".join(f'<div class="ares-example">{comparison_html(p, cols, img)}</div>' for p, cols, img in examples)
    if not examples:
        body = '<p class="ares-missing">No problem has both a baseline and an ARES rationale yet.</p>'
    return page_html(title, body)


def write_figure3(sources: RationaleSources, out: Path, qids: Optional[Sequence[str]] = None, n: int = 4,
                  seed: int = 0, scorer: Optional[Callable[[Mapping, str], Optional[list]]] = None) -> Path:
    """Write the page of ``qids`` (or ``n`` picked ones) of ``sources``' split to ``out``."""
    if qids is None:
        qids = pick_examples(sources, n, seed)
    missing = [q for q in qids if q not in sources.problems]
    if missing:
        raise KeyError(f"figure 3: qids not in the {sources.split} split: {missing}")
    examples = []
    for q in qids:
        problem = sources.problems[q]
        examples.append((problem, example_columns(sources, q, scorer), image_data_url(problem.get("image"))))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(figure3_html(examples, f"Rationales on {sources.split}: baseline vs ARES ({sources.run_name})"))
    return out
