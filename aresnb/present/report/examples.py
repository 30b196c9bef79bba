"""Judged test problems shown in the report and notebook 07: both rationales, the gold, the verdicts."""

from __future__ import annotations

import random

from aresnb.present.report.parts import e

CSS_EXAMPLES = """.ex{border:1px solid #ddd;border-radius:8px;padding:.6em 1em;margin:.8em 0}
.ex .r{display:grid;grid-template-columns:1fr 1fr;gap:1em} .ex .r div{background:#fafafa;padding:.5em}
.ex .muted{color:#666} .win{color:#2ca02c;font-weight:600} .loss{color:#d62728;font-weight:600}
.tie{color:#777;font-weight:600}"""


def choose_examples(records: list[dict], n: int, seed: int = 0) -> list[dict]:
    """Up to n judged items, alternating wins, losses and ties (seeded) so each kind is seen."""
    rng = random.Random(seed)
    pools = {k: [r for r in records if r.get("outcome") == k] for k in ("win", "loss", "tie")}
    for pool in pools.values():
        rng.shuffle(pool)
    out = []
    while len(out) < n and any(pools.values()):
        for k in ("win", "loss", "tie"):
            if pools[k] and len(out) < n:
                out.append(pools[k].pop())
    return out


def example_html(r: dict) -> str:
    """One judged problem: question, options, gold, both rationales side by side, the verdicts."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    choices = " ".join(f"({letters[i]}) {e(c)}" for i, c in enumerate(r.get("choices", [])))
    ans = r.get("answer")
    order = "ARES was Option A first" if r.get("ares_first") else "baseline was Option A first"
    sides = r.get("sides", ["?", "?"])
    return (f'<div class="ex"><p><b>{e(r["qid"])}</b> · <span class="{e(r["outcome"])}">ARES {e(r["outcome"])}</span>'
            f' · verdicts: {e(sides[0])} (first ask), {e(sides[1])} (swapped) · {e(order)}'
            f' · {e(", ".join(r.get("categories", [])))}</p>'
            f'<p><b>Question:</b> {e(r.get("question", ""))}<br><b>Options:</b> {choices}'
            + (f' · <b>answer</b> ({letters[ans]})' if isinstance(ans, int) else "")
            + f'</p><p class="muted"><b>Gold solution:</b> {e(r.get("gold", ""))}</p>'
            f'<div class="r"><div><b>Baseline</b><br>{e(r.get("baseline", ""))}</div>'
            f'<div><b>ARES</b><br>{e(r.get("ares", ""))}</div></div></div>')


def examples_html(records: list[dict], n: int, seed: int = 0) -> str:
    """The chosen examples (see :func:`choose_examples`), with the report's styles."""
    if not records:
        return '<p class="muted">No judged examples (stage 07 has not run).</p>'
    return f"<style>{CSS_EXAMPLES}</style>" + "".join(example_html(r) for r in choose_examples(records, n, seed))
