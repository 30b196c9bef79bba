"""`aresnb report RUN_DIR`: one self-contained HTML page of a run.

Headline win rate and accuracy, every table under ``tables/``, every figure under ``figures/``
(PNG inlined as base64), chosen judged examples, each stage's summary and the manifest. No
external file, script, font or network access: the page opens anywhere, offline, and can be mailed.
A run that has not finished gets a report of what exists.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
import random
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from aresnb.io import read_json, read_jsonl
from aresnb.paths import EVALUATION, ROUND_STAGES, STAGES, RunPaths

FIGURE_ORDER = ("win_rate", "accuracy_by_category", "training_curves", "teacher_scores")
TABLE_ORDER = ("win_rate", "accuracy_evaluation", "rationale_metrics")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1.5em;color:#222;line-height:1.45}
h1{margin-bottom:.1em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.muted{color:#666;font-size:.9em} .headline{display:flex;gap:1em;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:8px;padding:.8em 1.1em;min-width:200px;background:#fafafa}
.card .big{font-size:1.9em;font-weight:600} table{border-collapse:collapse;margin:.5em 0 1em;font-size:.88em}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right} th{background:#f0f0f0}
td.t,th.t{text-align:left} .tw{overflow-x:auto} figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555} pre{background:#f6f6f6;padding:.7em;overflow-x:auto;font-size:.8em}
"""
CSS_EXAMPLES = """.ex{border:1px solid #ddd;border-radius:8px;padding:.6em 1em;margin:.8em 0}
.ex .r{display:grid;grid-template-columns:1fr 1fr;gap:1em} .ex .r div{background:#fafafa;padding:.5em}
.ex .muted{color:#666} .win{color:#2ca02c;font-weight:600} .loss{color:#d62728;font-weight:600}
.tie{color:#777;font-weight:600}"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: Any, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * float(x):.{digits}f}%"


def _read(path: Path) -> Any:
    try:
        return read_json(path) if path.exists() else None
    except (OSError, json.JSONDecodeError):
        return None


def _table_html(df: pd.DataFrame, digits: int = 3) -> str:
    def cell(v):
        if isinstance(v, float):
            return "–" if pd.isna(v) else f"{v:.{digits}f}"
        return _e(v)

    text = {c: not (pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]))
            for c in df.columns}
    head = "".join(f'<th class="{"t" if text[c] else ""}">{_e(c)}</th>' for c in df.columns)
    rows = "".join("<tr>" + "".join(f'<td class="{"t" if text[c] else ""}">{cell(v)}</td>'
                                    for c, v in zip(df.columns, row)) + "</tr>"
                   for row in df.itertuples(index=False))
    return f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def headline_html(ev: dict | None) -> str:
    if not ev:
        return '<p class="muted">Stage 07 (evaluation) has not run: no win rate yet.</p>'
    c, lo_hi = ev.get("counts", {}), ev.get("win_rate_ci95") or [None, None]
    dec, dec_ci = ev.get("decisive_win_rate"), ev.get("decisive_win_rate_ci95") or [None, None]
    lengths, pos = ev.get("lengths", {}), ev.get("position_bias", {})
    paper = ev.get("paper_win_rate")
    cards = [
        ("Win rate of ARES over the baseline", _pct(ev.get("win_rate")),
         f"95% CI [{_pct(lo_hi[0])}, {_pct(lo_hi[1])}] · judge {_e(ev.get('judge_model'))}"
         + (f" · paper {paper:.2f}%" if paper is not None else "")),
        ("Both orders: wins / ties / losses", f"{c.get('wins', '–')} / {c.get('ties', '–')} / {c.get('losses', '–')}",
         f"of {c.get('n', '–')} test problems; {c.get('ties_inconsistent', '–')} ties from inconsistent verdicts"
         + (f"; {ev['identical_rationales']} identical rationale pairs" if ev.get("identical_rationales") else "")),
        ("Decisive win rate", _pct(dec), f"wins/(wins+losses), 95% CI [{_pct(dec_ci[0])}, {_pct(dec_ci[1])}]"),
        ("Judge consistency", _pct(ev.get("consistency_rate")),
         f"same verdict in both orders; Option A chosen in {_pct(pos.get('share_A_of_decisive'))} of decisive asks"),
        ("Answer accuracy gain of ARES (Avg)",
         " · ".join(f"{g:+.1f}" for g in (ev.get("accuracy_gain_pts") or {}).values()) or "–",
         " · ".join(f"{f}" for f in (ev.get("accuracy_gain_pts") or {})) + " points"
         + (f" · paper +{ev['paper_accuracy_gain_pts']}" if ev.get("paper_accuracy_gain_pts") else "")),
        ("Mean rationale length (words)",
         f"{lengths.get('baseline_mean_words', float('nan')):.1f} → {lengths.get('ares_mean_words', float('nan')):.1f}",
         "baseline → ARES (judges favour longer answers)"),
    ]
    body = "".join(f'<div class="card"><div class="muted">{_e(t)}</div><div class="big">{_e(v)}</div>'
                   f'<div class="muted">{d}</div></div>' for t, v, d in cards)
    return (f'<div class="headline">{body}</div><p class="muted">{_e(ev.get("win_rate_definition", ""))}. '
            f'Both orders: ARES preferred in both on {_pct(ev.get("both_orders_win_rate"))} of the problems.</p>')


def _in_order(files: Iterable[Path], order: Sequence[str]) -> list[Path]:
    """Files whose stem is named in ``order`` first, in that order; the rest after, by name."""
    return sorted(files, key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.stem))


def _tables(tables_dir: Path) -> str:
    if not tables_dir.exists():
        return '<p class="muted">No tables.</p>'
    csvs = _in_order(tables_dir.glob("*.csv"), TABLE_ORDER)
    out = []
    for f in csvs:
        df = pd.read_csv(f)
        caption = ""
        md = f.with_suffix(".md")
        if md.exists() and md.read_text().startswith("**"):
            caption = md.read_text().split("**")[1]
        df = df.drop(columns=[c for c in ("key",) if c in df.columns])
        out.append(f'<h3>{_e(f.stem)}</h3><p class="muted">{_e(caption)} '
                   f'(<code>tables/{_e(f.name)}</code>, also .md and .tex)</p>{_table_html(df)}')
    return "".join(out) or '<p class="muted">No tables.</p>'


def _figures(figures_dir: Path) -> str:
    if not figures_dir.exists():
        return '<p class="muted">No figures.</p>'
    pngs = _in_order(figures_dir.glob("*.png"), FIGURE_ORDER)
    out = []
    for f in pngs:
        data = base64.b64encode(f.read_bytes()).decode("ascii")
        out.append(f'<figure><img class="figure" alt="{_e(f.stem)}" src="data:image/png;base64,{data}">'
                   f'<figcaption>{_e(f.stem)} (<code>figures/{_e(f.name)}</code>, also PDF)</figcaption></figure>')
    return "".join(out) or '<p class="muted">No figures.</p>'


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
    choices = " ".join(f"({letters[i]}) {_e(c)}" for i, c in enumerate(r.get("choices", [])))
    ans = r.get("answer")
    order = "ARES was Option A first" if r.get("ares_first") else "baseline was Option A first"
    sides = r.get("sides", ["?", "?"])
    return (f'<div class="ex"><p><b>{_e(r["qid"])}</b> · <span class="{_e(r["outcome"])}">ARES {_e(r["outcome"])}</span>'
            f' · verdicts: {_e(sides[0])} (first ask), {_e(sides[1])} (swapped) · {_e(order)}'
            f' · {_e(", ".join(r.get("categories", [])))}</p>'
            f'<p><b>Question:</b> {_e(r.get("question", ""))}<br><b>Options:</b> {choices}'
            + (f' · <b>answer</b> ({letters[ans]})' if isinstance(ans, int) else "")
            + f'</p><p class="muted"><b>Gold solution:</b> {_e(r.get("gold", ""))}</p>'
            f'<div class="r"><div><b>Baseline</b><br>{_e(r.get("baseline", ""))}</div>'
            f'<div><b>ARES</b><br>{_e(r.get("ares", ""))}</div></div></div>')


def examples_html(records: list[dict], n: int, seed: int = 0) -> str:
    """The chosen examples (see :func:`choose_examples`), with the report's styles."""
    if not records:
        return '<p class="muted">No judged examples (stage 07 has not run).</p>'
    return f"<style>{CSS_EXAMPLES}</style>" + "".join(example_html(r) for r in choose_examples(records, n, seed))


def _stages(paths: RunPaths, manifest: dict | None) -> str:
    entries = (manifest or {}).get("stages", {})
    dirs = []
    for stage in STAGES:
        if stage in ROUND_STAGES:
            dirs += [paths.stage_path(stage, r) for r in paths.rounds_present()]
        else:
            dirs.append(paths.stage_path(stage))
    rows, details = [], []
    for d in dirs:
        label = str(d.relative_to(paths.run_dir))
        summary, m = _read(d / "summary.json"), entries.get(label, {})
        if summary is None and not m:
            continue
        wall = m.get("wall_time_s", (summary or {}).get("wall_time_s"))
        rows.append(f'<tr><td class="t">{_e(label)}</td><td class="t">{_e(m.get("status", "–"))}</td>'
                    f'<td>{"–" if wall is None else f"{float(wall):.1f}"}</td></tr>')
        if summary is not None:
            details.append(f"<details><summary>{_e(label)}/summary.json</summary>"
                           f"<pre>{_e(json.dumps(summary, indent=2))}</pre></details>")
    if not rows:
        return '<p class="muted">No stage has run.</p>'
    return ('<table><thead><tr><th class="t">stage</th><th class="t">status</th><th>wall time (s)</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>{"".join(details)}')


def render_report(run_dir: str | Path) -> str:
    """The report's HTML text."""
    paths = RunPaths.from_dir(run_dir)
    run_dir = paths.run_dir
    manifest = _read(paths.manifest)
    ev = _read(paths.summary_file(EVALUATION))
    params = (manifest or {}).get("params", {})
    n_examples = int(params.get("evaluation", {}).get("n_examples", 4))
    seed = int(params.get("run", {}).get("seed", 0))
    records = read_jsonl(paths.judgments_file)
    name = (manifest or {}).get("run", run_dir.name)
    git = (manifest or {}).get("git", {})
    commit = git.get("commit", "") if isinstance(git, dict) else git
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    sim = (ev or {}).get("similarity_model", {})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>aresnb report: {_e(name)}</title><style>{CSS}</style></head>
<body>
<h1>ARES run report: {_e(name)}</h1>
<p class="muted">{_e(run_dir)} · params hash {_e((manifest or {}).get("params_hash", "–"))} · git {_e(commit or "–")}
 · data {_e(params.get("data", {}).get("source", "–"))} · model {_e(params.get("model", {}).get("base", "–"))}
 · {_e((manifest or {}).get("rounds", params.get("ares", {}).get("rounds", "–")))} round(s) · report written {_e(now)}</p>
<h2>Headline</h2>
{headline_html(ev)}
<h2>Tables</h2>
<p class="muted">Accuracy in percent. Rationale metrics against the gold solutions; similarity model:
{_e(sim.get("used", "–"))}.</p>
{_tables(paths.tables_dir)}
<h2>Figures</h2>
{_figures(paths.figures_dir)}
<h2>Examples</h2>
<p class="muted">Judged test problems, alternating ARES wins, losses and ties (seed {seed}).</p>
{examples_html(records, n_examples, seed)}
<h2>Stages</h2>
{_stages(paths, manifest)}
<h2>Manifest</h2>
<details><summary>manifest.json</summary><pre>{_e(json.dumps(manifest, indent=2) if manifest else "no manifest.json")}</pre></details>
</body></html>
"""


def write_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report.html`` (atomically) and return its path."""
    paths = RunPaths.from_dir(run_dir)
    if not paths.run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {paths.run_dir}")
    out = paths.report_file
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(render_report(paths.run_dir), encoding="utf-8")
    os.replace(tmp, out)
    return out
