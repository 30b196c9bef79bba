"""The report page: banner, headline, the stages' sections, the run; written atomically."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from aresnb.paths import STAGE_TITLES, STAGES
from aresnb.present import plots
from aresnb.present.report.examples import examples_html
from aresnb.present.report.facts import headline_facts, run_banner
from aresnb.present.report.parts import CSS, card_html, e
from aresnb.present.report.sections import run_section, stage_sections
from aresnb.stages.results import RunResults, read_run_dir


def headline_html(run: RunResults | str | Path) -> str:
    """The headline cards of a run (its results, or its folder); a regression is framed red and flagged."""
    facts = headline_facts(run if isinstance(run, RunResults) else read_run_dir(run))
    if not facts:
        return '<p class="muted">Stage 07 (evaluation) has not run: no win rate yet.</p>'
    return '<div class="headline">' + "".join(card_html(f.title, f.value, f.detail, f.regression) for f in facts) + "</div>"


def _nav() -> str:
    links = [("headline", "Headline")] + [(f"stage-{s[:2]}", f"{s[:2]} {STAGE_TITLES[s].split(' (')[0]}") for s in STAGES]
    return "<nav>" + "".join(f'<a href="#{i}">{e(t)}</a>' for i, t in links + [("run", "The run")]) + "</nav>"


def render_report(run: RunResults | str | Path) -> str:
    """The report's HTML text, of a run's results (or of its folder, read now)."""
    run = run if isinstance(run, RunResults) else read_run_dir(run)
    manifest = None if run.manifest is None else dict(run.manifest)
    params = (manifest or {}).get("params", {})
    n_examples = int(params.get("evaluation", {}).get("n_examples", 4))
    seed = int(params.get("run", {}).get("seed", 0))
    name = (manifest or {}).get("run", run.outputs.run_dir.name)
    git = (manifest or {}).get("git", {})
    commit = (git.get("commit") if isinstance(git, dict) else git) or "–"
    kind, banner = run_banner(run, params)
    examples = ('<p class="muted">Judged test problems, alternating ARES wins, losses and ties (seed '
                f'{seed}).</p>' + examples_html([dict(r) for r in run.judgments], n_examples, seed))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    rounds = (manifest or {}).get("rounds", params.get("ares", {}).get("rounds", "–"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>aresnb report: {e(name)}</title><style>{CSS}</style></head>
<body>
<h1>ARES run report: {e(name)}</h1>
<p class="muted">params hash {e((manifest or {}).get("params_hash", "–"))} · git {e(commit)} · {e(rounds)} ARES round(s)
 · report written {e(now)}</p>
<div class="banner {kind}" id="banner">{e(banner)}</div>
{_nav()}
<section id="headline"><h2>Headline</h2>{headline_html(run)}</section>
{"".join(stage_sections(run, examples))}
{run_section(run)}
</body></html>
"""


def write_report(run_dir: str | Path, refresh_figures: bool = False) -> Path:
    """Write ``<run_dir>/report.html`` (atomically) and return its path; ``refresh_figures`` redraws
    every figure from the run's files first (after a code change, say)."""
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run directory not found: {Path(run_dir)}")
    run = read_run_dir(run_dir)
    if refresh_figures:
        plots.write_all_figures(run, run.outputs.figures_dir)
        run = read_run_dir(run_dir)  # with the figures just drawn
    out = run.outputs.report_file
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(render_report(run), encoding="utf-8")
    os.replace(tmp, out)
    return out
