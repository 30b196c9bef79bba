"""Stage 03 panel: pick a problem and a sample; see each sentence coloured by its Teacher score,
with the score, the PPO reward (score - 0.5) and the Teacher's raw reply."""

from __future__ import annotations

import html
from typing import Any, Mapping

import pandas as pd

from aresnb.present.widgets.static import show_panel

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def score_colour(score: float | None) -> str:
    """Red (0.0) -> yellow (0.5) -> green (1.0); grey when there is no score."""
    if score is None:
        return "#dddddd"
    s = min(1.0, max(0.0, float(score)))
    red, green = (255, int(510 * s)) if s < 0.5 else (int(510 * (1 - s)), 255)
    return f"rgb({red},{green},120)"


def render_sample_html(row: Mapping[str, Any], problem: Mapping[str, Any] | None = None) -> str:
    """One sample as HTML: the problem, the coloured sentences with score and reward, the raw reply."""
    parts = []
    if problem is not None:
        options = " ".join(f"({LETTERS[i]}) {html.escape(str(c))}" for i, c in enumerate(problem["choices"]))
        parts.append(f"<p><b>{html.escape(str(problem['qid']))}</b>: {html.escape(str(problem['question']))}<br>"
                     f"{options} &mdash; answer ({LETTERS[int(problem['answer'])]})</p>")
    scores = row.get("scores")
    scores = list(scores) if scores is not None else None
    rows = []
    for j, sentence in enumerate(row["sentences"]):
        score = None if scores is None else float(scores[j])
        label = "—" if score is None else f"{score:.1f} / {score - 0.5:+.1f}"
        rows.append(f'<tr><td style="background:{score_colour(score)};padding:2px 6px">{html.escape(sentence)}</td>'
                    f'<td style="padding:2px 6px;font-family:monospace">{label}</td></tr>')
    parts.append('<table><tr><th>sentence</th><th>score / reward</th></tr>' + "".join(rows) + "</table>")
    if row.get("dropped"):
        parts.append(f"<p style='color:#b00'>dropped: {html.escape(str(row.get('drop_reason')))} "
                     f"{html.escape(str(row.get('drop_detail') or ''))}</p>")
    parts.append("<details open><summary>raw Teacher reply</summary><pre style='white-space:pre-wrap'>"
                 f"{html.escape(str(row.get('raw_reply')))}</pre></details>")
    return "\n".join(parts)


def first_samples_html(samples: pd.DataFrame, problems: Mapping[str, Mapping[str, Any]] | None = None,
                       n: int = 2) -> str:
    """The first sample of the first ``n`` problems, as the panel shows them: its static view."""
    parts = []
    for qid in list(dict.fromkeys(samples["qid"]))[:n]:
        sub = samples[samples["qid"] == qid].sort_values("sample_index")
        parts.append(render_sample_html(sub.iloc[0].to_dict(), (problems or {}).get(qid)))
    return "<hr>".join(parts) or "<i>no samples</i>"


def score_panel(samples: pd.DataFrame, problems: Mapping[str, Mapping[str, Any]] | None = None):
    """The interactive panel (ipywidgets): problem dropdown, sample dropdown, the rendered sample.
    It opens on the first sample of the first problem."""
    import ipywidgets as w  # deferred: render_sample_html is used without a kernel

    qids = list(dict.fromkeys(samples["qid"]))
    pick_qid = w.Dropdown(options=qids, value=qids[0] if qids else None, description="problem")
    pick_sample = w.Dropdown(description="sample")
    out = w.HTML()

    def show(*_):
        sub = samples[samples["qid"] == pick_qid.value]
        if pick_sample.value not in set(sub["sample_index"]):
            return
        row = sub[sub["sample_index"] == pick_sample.value].iloc[0].to_dict()
        out.value = render_sample_html(row, (problems or {}).get(pick_qid.value))

    def on_qid(*_):
        options = sorted(samples.loc[samples["qid"] == pick_qid.value, "sample_index"].tolist())
        pick_sample.options = options
        if options:  # new options leave the value None: open on the first sample
            pick_sample.value = options[0]
        show()

    pick_qid.observe(on_qid, names="value")
    pick_sample.observe(show, names="value")
    on_qid()
    return w.VBox([w.HBox([pick_qid, pick_sample]), out])


def show_score_panel(samples: pd.DataFrame, problems: Mapping[str, Mapping[str, Any]] | None = None,
                     n_static: int = 2) -> None:
    """Display the panel and, under it, the static view of its first ``n_static`` problems."""
    show_panel(score_panel(samples, problems), first_samples_html(samples, problems, n_static),
               f"the first sample of the first {n_static} problems")
