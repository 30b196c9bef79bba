"""Notebook 04's panel: one held-out problem's greedy rationale before and after PPO, sentence by
sentence with the Teacher's score of each (PPO's reward of a sentence is its score − 0.5).

Reads the rows stage 04 keeps in ``eval_before.json`` / ``eval_after.json`` (qid, rationale,
score, sentences, sentence_scores). Problems are listed by how much their score changed.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from aresnb.present.widgets.rationale_panel import Column, comparison_html, image_data_url
from aresnb.present.widgets.static import show_panel


def _fmt(score: Optional[float]) -> str:
    return "not scored" if score is None else f"{score:.3f}"


def _column(name: str, row: Mapping | None, reference: Optional[str]) -> Column:
    if row is None:
        return Column(name, None)
    score = row.get("score")
    reward = "" if score is None else f"; its sentences' mean reward {score - 0.5:+.3f}"
    return Column(name, row.get("rationale") or "", reference=reference, scores=row.get("sentence_scores"),
                  note=f"Teacher score {_fmt(score)} (mean of its sentences){reward}")


def ordered_qids(before: Mapping[str, Mapping], after: Mapping[str, Mapping]) -> list[str]:
    """Held-out qids, the largest change of score first (unscored ones last), then by qid."""
    def change(q: str) -> float:
        a, b = before.get(q, {}).get("score"), after.get(q, {}).get("score")
        return -1.0 if a is None or b is None else abs(b - a)

    return sorted(set(before) | set(after), key=lambda q: (-change(q), q))


def reward_html(problem: Mapping, before: Mapping | None, after: Mapping | None) -> str:
    """The problem, then its rationale before and after PPO (after diffed against before)."""
    cols = [_column("before PPO", before, None),
            _column("after PPO", after, (before or {}).get("rationale"))]
    return comparison_html(dict(problem), cols, image_data_url(problem.get("image")))


def _by_qid(rows: Sequence[Mapping]) -> dict[str, Mapping]:
    return {str(r["qid"]): r for r in rows}


def first_rewards_html(rows_before: Sequence[Mapping], rows_after: Sequence[Mapping], problems: Mapping[str, Mapping],
                       n: int = 2) -> str:
    """The panel's first ``n`` problems: its static view."""
    before, after = _by_qid(rows_before), _by_qid(rows_after)
    qids = [q for q in ordered_qids(before, after) if q in problems][:n]
    return "".join(reward_html(problems[q], before.get(q), after.get(q)) for q in qids) or "<i>no held-out problems</i>"


def reward_panel(rows_before: Sequence[Mapping], rows_after: Sequence[Mapping], problems: Mapping[str, Mapping]):
    """An ipywidgets panel: pick a held-out problem (largest change first); it opens on the first."""
    import ipywidgets as w  # deferred: the HTML builders are used without a kernel

    before, after = _by_qid(rows_before), _by_qid(rows_after)
    qids = [q for q in ordered_qids(before, after) if q in problems]

    def label(q: str) -> str:
        a, b = before.get(q, {}).get("score"), after.get(q, {}).get("score")
        change = "" if a is None or b is None else f" · {a:.2f} → {b:.2f}"
        return f"{q}{change} · {problems[q].get('question', '')[:60]}"

    pick = w.Dropdown(options=[(label(q), q) for q in qids], value=qids[0] if qids else None, description="problem",
                      layout=w.Layout(width="80%"))
    out = w.HTML()

    def render(*_):
        q = pick.value
        out.value = reward_html(problems[q], before.get(q), after.get(q)) if q is not None else "<i>no held-out problems</i>"

    pick.observe(render, names="value")
    render()
    return w.VBox([pick, out])


def show_reward_panel(rows_before: Sequence[Mapping], rows_after: Sequence[Mapping], problems: Mapping[str, Mapping],
                      n_static: int = 2) -> None:
    """Display the panel and, under it, the static view of its first ``n_static`` problems."""
    show_panel(reward_panel(rows_before, rows_after, problems), first_rewards_html(rows_before, rows_after, problems,
                                                                                   n_static),
               f"the {n_static} held-out problems whose score changed most")
