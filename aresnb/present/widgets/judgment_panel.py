"""Notebook 07's panel: one judged test problem, both rationales, the gold and the two verdicts."""

from __future__ import annotations

from typing import Mapping

from aresnb.present.report import CSS_EXAMPLES, choose_examples, example_html
from aresnb.present.widgets.static import show_panel


def judgment_html(record: Mapping) -> str:
    return f"<style>{CSS_EXAMPLES}</style>" + example_html(dict(record))


def first_judgments_html(records: Mapping[str, Mapping], n: int = 3, seed: int = 0) -> str:
    """A win, a loss and a tie (seeded) as the report shows them: the panel's static view."""
    chosen = choose_examples(list(records.values()), n, seed)
    return "".join(judgment_html(r) for r in chosen) or "<i>no judged problems</i>"


def judgment_panel(records: Mapping[str, Mapping]):
    """Pick a judged test problem; the panel opens on the first one."""
    import ipywidgets as w  # deferred: the HTML builders are used without a kernel

    qids = list(records)
    pick = w.Dropdown(options=[(f"{q} · ARES {r['outcome']}", q) for q, r in records.items()],
                      value=qids[0] if qids else None, description="problem")
    out = w.HTML()

    def render(*_):
        out.value = judgment_html(records[pick.value]) if pick.value is not None else "<i>no judged problems</i>"

    pick.observe(render, names="value")
    render()
    return w.VBox([pick, out])


def show_judgment_panel(records: Mapping[str, Mapping], n_static: int = 3, seed: int = 0) -> None:
    """Display the panel and, under it, the static view of a win, a loss and a tie."""
    show_panel(judgment_panel(records), first_judgments_html(records, n_static, seed),
               f"{n_static} judged problems, alternating ARES wins, losses and ties")
