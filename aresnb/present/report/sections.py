"""One report section per stage: what it did in words, its key numbers, its figures and tables.

Tables are shown once, with human titles and their key columns; each links its full CSV. A stage
that has not run says so.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from aresnb.paths import ANSWER_LORA, BASELINE, CORRECTION_SFT, DATA, EVALUATION, PPO, STAGE_TITLES, TEACHER_SCORES
from aresnb.present import plots
from aresnb.present.report.parts import e, figure_html, frame_html, json_block, pct, table_html
from aresnb.stages.results import RunResults

RATE_WORDS = {"repeated_sentence_rate": "repeated sentences", "unfinished_sentence_rate": "unfinished last sentence",
              "repeated_word_rate": "repeated words", "empty_rate": "empty rationales", "mean_words": "mean words",
              "mean_sentences": "sentences per rationale", "words_per_sentence": "words per sentence"}
COUNT_MEASURES = ("mean_words", "mean_sentences", "words_per_sentence")  # numbers, not shares
POINT_WORDS = {"before_rl": "before RL", "baseline": "baseline (before RL)", "after_rl": "after RL",
               "after_sft": "after SFT (ARES)"}


def _figures(run: RunResults, stage: str) -> str:
    out = []
    for name, spec in plots.FIGURES.items():
        png = run.figure_files.get(name)
        if spec.stage == stage and png is not None:
            out.append(figure_html(png, spec.title, spec.caption))
    return "".join(out)


def _csv_link(run: RunResults, table: str) -> str:
    """A link to stage 07's table ``table`` (its summary's name), when its CSV is there."""
    name = run.table_files.get(table)
    return f' (full table: <a href="tables/{e(name)}">tables/{e(name)}</a>)' if name else ""


def _section(stage: str, run: RunResults, body_of: Callable[[dict, RunResults], str]) -> str:
    """A stage's section: its title, ``body_of(summary, run)``, its figures, its summary.json."""
    summary = dict(run.summary(stage))
    label = _round_label(summary)
    title = f"{stage[:2]} · {STAGE_TITLES[stage]}{f' ({label})' if label else ''}"
    if not summary:
        return f'<section id="stage-{stage[:2]}"><h2>{e(title)}</h2><p class="muted">This stage has not run yet.</p></section>'
    details = json_block(f"{stage}/summary.json", summary, run.outputs.run_dir)
    return (f'<section id="stage-{stage[:2]}"><h2>{e(title)}</h2>{body_of(summary, run)}{_figures(run, stage)}'
            f"{details}</section>")


def _rates_table(rates: dict, points: Sequence[str], metrics: Sequence[str]) -> str:
    rows = [[RATE_WORDS[m]] + [("–" if rates[p].get(m) is None else f"{rates[p][m]:.1f}") if m in COUNT_MEASURES
                               else pct(rates[p][m]) for p in points]
            for m in metrics]
    return table_html(rows, ["measure"] + [POINT_WORDS[p] for p in points])


def data_body(s: dict, run: RunResults) -> str:
    cats = pd.DataFrame(s.get("categories", {})).T.reset_index(names="split")
    return (f"<p>{e(' · '.join(f'{n} {k}' for k, n in s.get('problems', {}).items()))} problems; "
            f"image features of shape {e(tuple(s.get('feature_shape', [])))} per problem; "
            f"{s.get('skipped', 0)} skipped, {s.get('zero_filled', 0)} with zeroed features "
            f"(missing image policy: {e(s.get('missing_image_policy'))}).</p>"
            f"<h3>Problems per split and ScienceQA category</h3>{frame_html(cats)}")


def baseline_body(s: dict, run: RunResults) -> str:
    t, m, v = s.get("train", {}), s.get("model", {}), s.get("val", {})
    if t.get("trained") is False:  # baseline.train: false (MM-CoT's released model, as ARES starts)
        return (f"<p>A {m.get('parameters', 0) / 1e6:.1f} M-parameter multimodal T5 loaded from "
                f"{e(Path(str(t.get('init_from'))).name)} and not trained here (baseline.train: false); held-out (val) "
                f"teacher-forced token accuracy {pct(v.get('token_accuracy'))}. Greedy rationales of val and test "
                "are the baseline's.</p>")
    return (f"<p>A {m.get('parameters', 0) / 1e6:.1f} M-parameter multimodal T5 trained for {t.get('steps')} "
            f"optimizer steps on QCM-E (question, context, options → rationale): loss {t.get('first_loss', 0):.2f} "
            f"→ {t.get('last_loss', 0):.2f}; held-out (val) teacher-forced token accuracy "
            f"{pct(v.get('token_accuracy'))}. Greedy rationales of val and test are the baseline's.</p>")


def teacher_scores_body(s: dict, run: RunResults) -> str:
    return (f"<p>{s.get('samples_per_problem')} sampled rationales for each of {s.get('problems')} train problems: "
            f"{s.get('sentences')} sentences scored by the Teacher (mean {s.get('score_mean', 0):.3f}; "
            f"{pct(s.get('share_zero'))} scored 0, {pct(s.get('share_one'))} scored 1); "
            f"{s.get('dropped')} samples dropped. PPO's reward of a sentence is its score − 0.5.</p>")


def _round_label(s: dict) -> str:
    return f"round {s['latest_round']} of {len(s.get('rounds', {}))}" if len(s.get("rounds", {})) > 1 else ""


def ppo_body(s: dict, run: RunResults) -> str:
    before, after, delta = s.get("teacher_score_before"), s.get("teacher_score_after"), s.get("teacher_score_delta")
    lo, hi = (s.get("teacher_score_delta_ci95") or [None, None])[:2]
    if None in (before, after, delta, lo, hi):
        body = "<p>No held-out score was recorded.</p>"
    else:
        moved = "rose" if delta > 0 else "fell" if delta < 0 else "did not move"
        flag = ' <span class="flag">regression</span>' if delta < 0 else ""
        body = (f"<p><b>Held-out Teacher score {moved}{flag}:</b> {before:.3f} before PPO → {after:.3f} after "
                f"(change {delta:+.3f}, paired 95% bootstrap CI {lo:+.3f} to {hi:+.3f}; greedy rationales of "
                f"{s.get('eval_problems')} val problems). {s.get('optimizer_steps')} optimizer steps, "
                f"{s.get('passes')} passes over {s.get('sequences_trained')} buffered sequences.</p>")
    quality = s.get("eval_quality") or {}
    if {"before_rl", "after_rl"} <= set(quality):
        body += ("<h3>Held-out rationales before and after PPO</h3>"
                 + _rates_table(quality, ["before_rl", "after_rl"], list(RATE_WORDS)))
    if s.get("kl_by_pass"):
        kl = pd.DataFrame(s["kl_by_pass"]).rename(columns={"kl": "KL (sum per sequence)",
                                                             "kl_k3": "KL per token (k3)", "clipfrac": "clipped share"})
        body += f"<h3>Distance from the reference, per pass over the buffer</h3>{frame_html(kl, 4)}"
    return body


def correction_body(s: dict, run: RunResults) -> str:
    body = (f"<p>The PPO policy's greedy rationales of {s.get('n_problems')} train problems, repeated sentences "
            f"removed, went to the Teacher: {s.get('corrected')} corrected, {s.get('unchanged')} left unchanged, "
            f"{s.get('fallback')} without a usable reply (kept as they were). SFT on them starts from the PPO "
            "policy.</p>")
    rates = s.get("val_rates") or {}
    points = [p for p in ("before_rl", "after_rl", "after_sft") if p in rates]
    if points:
        regress = [RATE_WORDS[m] for m in ("unfinished_sentence_rate", "repeated_sentence_rate")
                   if "after_sft" in rates and rates["after_sft"][m] > rates[points[0]][m] + 1e-12]
        flag = (f' <span class="flag">regression</span> more {", ".join(regress)} after SFT than before RL'
                if regress else "")
        body += (f"<h3>Degeneration of greedy val rationales at three points{flag}</h3>"
                 + _rates_table(rates, points, list(RATE_WORDS)))
    return body + examples_page(run)


def examples_page(run: RunResults) -> str:
    """The Figure-3 page (baseline vs ARES on test) embedded, and its file linked."""
    page = run.figure3_file
    if page is None:
        return ""
    return ('<h3 id="rationale-examples">Rationales side by side: baseline vs ARES (in the manner of the paper\'s '
            f'Figure 3)</h3><p class="muted">Also as a page of its own: <a href="figures/{e(page.name)}">figures/'
            f'{e(page.name)}</a>.</p><iframe class="examples" title="baseline vs ARES rationales" '
            f'srcdoc="{html.escape(page.read_text(encoding="utf-8"), quote=True)}"></iframe>')


def _accuracy_table(run: RunResults) -> str:
    if "accuracy" not in run.tables:
        return ""
    df = run.tables["accuracy"]
    if "source" in df.columns and set(df["source"]) == {"this run"}:
        df = df.drop(columns="source")
    cols = list(df.columns)

    def worse(i: int, j: int) -> str:  # ARES below the baseline of the same format and source
        row = df.iloc[i]
        if not str(row["model"]).startswith("ARES") or not pd.api.types.is_number(row[cols[j]]):
            return ""
        same = (df["model"] == "Baseline") & (df["format"] == row["format"])
        if "source" in df.columns:
            same &= df["source"] == row["source"]
        base = df.loc[same, cols[j]]
        return "neg" if len(base) and row[cols[j]] < base.iloc[0] - 1e-9 else ""

    return ("<h3>Answer accuracy (%) by category</h3><p class=\"muted\">A red cell: ARES below the baseline."
            f"{_csv_link(run, 'accuracy')}</p>{frame_html(df, 1, worse)}")


def answer_body(s: dict, run: RunResults) -> str:
    ab = s.get("image_ablation")
    body = (f"<p>A LoRA adapter ({pct(s.get('trainable_fraction'))} of the weights) on each rationale model "
            f"answers the {s.get('n_test')} test problems, from QCM-A (question, context, options) and QCMG-A "
            "(with the model's own rationale).</p>")
    if ab:
        body += (f"<p><b>Image ablation:</b> the same head with the image features zeroed reaches "
                 f"{ab['accuracy_without_image']:.1f}% against {ab['accuracy_with_image']:.1f}% with them.</p>")
    body += _accuracy_table(run)
    return body


def _win_rate_table(run: RunResults) -> str:
    if "win_rate" not in run.tables:
        return ""
    df = run.tables["win_rate"]
    rows = [[r.group, r.n, f"{100 * r.win_rate:.1f}% [{100 * r.win_rate_lo:.1f}, {100 * r.win_rate_hi:.1f}]",
             f"{r.wins} / {r.ties} / {r.losses}", pct(r.decisive_win_rate) if pd.notna(r.decisive_win_rate) else "–"]
            for r in df.itertuples(index=False)]
    header = ["group", "n", "win rate [95% CI]", "both orders: wins / ties / losses", "decisive win rate"]
    return (f"<h3>Win rate by category</h3><p class=\"muted\">Key columns{_csv_link(run, 'win_rate')}.</p>"
            + table_html(rows, header))


def _comparisons_table(run: RunResults) -> str:
    """Every comparison the judge made, each win rate with what it is made of."""
    if "comparisons" not in run.tables:
        return ""
    df = run.tables["comparisons"]
    rows = [[f"{r.subject} vs {r.reference}", r.n, f"{r.wins} / {r.ties} / {r.losses}", pct(r.tie_rate),
             "–" if pd.isna(r.decisive_win_rate) else f"{pct(r.decisive_win_rate)} [{pct(r.decisive_lo)}, {pct(r.decisive_hi)}]",
             f"{pct(r.win_rate)} [{pct(r.win_rate_lo)}, {pct(r.win_rate_hi)}]", r.identical]
            for r in df.itertuples(index=False)]
    header = ["comparison", "n", "both orders: wins / ties / losses", "tie rate", "decisive win rate [95% CI]",
              "forced choice (paper) [95% CI]", "identical texts"]
    return ("<h3>Every comparison</h3><p class=\"muted\">With many ties the forced choice is about 50% plus half the "
            f"decisive margin: read the three together{_csv_link(run, 'comparisons')}.</p>" + table_html(rows, header))


def _arms_table(s: dict) -> str:
    """Per evaluated model (the baseline, the ablation arms, ARES): accuracy, claims, degeneration."""
    arms = s.get("arms") or {}
    if len(arms) <= 2:
        return ""
    rows = []
    for name, a in arms.items():
        q, c, acc = a["degeneration"], a.get("claims") or {}, a.get("accuracy") or {}
        rows.append([name, a["description"], *(("–" if acc.get(f) is None else f"{acc[f]:.1f}%") for f in ("QCM-A", "QCMG-A")),
                     f"{pct(c.get('true_share'))} / {pct(c.get('false_share'))}" if c else "–",
                     f"{pct(q['repeated_sentence_rate'])} / {pct(q['unfinished_sentence_rate'])} / {pct(q['empty_rate'])}",
                     f"{q['mean_sentences']:.2f}, {q.get('words_per_sentence', 0):.1f}"])
    header = ["model", "what it is", "QCM-A", "QCMG-A", "true / false claims", "repeated / unfinished / empty",
              "sentences per rationale, words per sentence"]
    return "<h3>The models compared (test)</h3>" + table_html(rows, header)


def _metrics_table(run: RunResults) -> str:
    if "rationale_metrics" not in run.tables:
        return ""
    df = run.tables["rationale_metrics"].rename(columns={"bleu1": "BLEU-1", "bleu4": "BLEU-4", "rougeL": "ROUGE-L",
                                        "similarity": "similarity (MiniLM)", "mean_words": "mean words"})
    return (f"<h3>Rationales against the gold solutions (test)</h3><p class=\"muted\">"
            f"{_csv_link(run, 'rationale_metrics').strip()}</p>{frame_html(df, 3)}")


def evaluation_body(s: dict, run: RunResults, examples: str = "") -> str:
    c = s.get("counts", {})
    body = (f"<p>The judge ({e(s.get('judge_model'))}) compared the baseline's and ARES's rationale for "
            f"{s.get('judged_problems')} test problems. {e(s.get('win_rate_definition', ''))}. Both orders: "
            f"{c.get('wins')} wins, {c.get('ties')} ties ({c.get('ties_inconsistent')} from inconsistent verdicts), "
            f"{c.get('losses')} losses; the judge gave the same verdict in both orders on "
            f"{pct(s.get('consistency_rate'))} of the problems. Mean length: "
            f"{s.get('lengths', {}).get('baseline_mean_words', 0):.1f} words (baseline) vs "
            f"{s.get('lengths', {}).get('ares_mean_words', 0):.1f} (ARES); judges favour longer answers.</p>")
    body += _comparisons_table(run) + _win_rate_table(run) + _arms_table(s) + _metrics_table(run)
    degeneration = s.get("degeneration") or {}
    if degeneration:
        points = [p for p in ("baseline", "after_rl", "after_sft") if p in degeneration]
        measures = [m for m in RATE_WORDS if all(m in degeneration[p] for p in points)]
        body += "<h3>Degeneration of the test rationales</h3>" + _rates_table(degeneration, points, measures)
    body += f"<h3>Judged examples</h3>{examples}"
    return body


def run_section(run: RunResults) -> str:
    """Each step's status and wall time, its executed notebook, the manifest."""
    manifest = None if run.manifest is None else dict(run.manifest)
    entries = (manifest or {}).get("stages", {})
    rows = []
    for label, m in entries.items():
        page = run.notebook_pages.get(Path(m.get("notebook", label)).name)
        link = f'<a href="notebooks/{e(page)}">{e(page)}</a>' if page else "–"
        wall = m.get("wall_time_s")
        rows.append(f'<tr><td class="t">{e(label)}</td><td class="t">{e(m.get("status", "–"))}</td>'
                    f'<td>{"–" if wall is None else f"{float(wall):.1f}"}</td><td class="t">{link}</td></tr>')
    table = ('<table><thead><tr><th class="t">step</th><th class="t">status</th><th>wall time (s)</th>'
             f'<th class="t">executed notebook</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
             if rows else '<p class="muted">No stage has run.</p>')
    manifest_block = (json_block("manifest.json", manifest, run.outputs.run_dir) if manifest
                      else '<p class="muted">no manifest.json</p>')
    return f'<section id="run"><h2>The run</h2>{table}{manifest_block}</section>'


SECTION_IDS = ("headline", "stage-01", "stage-02", "stage-03", "stage-04", "stage-05", "stage-06", "stage-07", "run")


def stage_sections(run: RunResults, examples: str) -> list[str]:
    """The seven stage sections, in pipeline order."""
    bodies = {DATA: data_body, BASELINE: baseline_body, TEACHER_SCORES: teacher_scores_body, PPO: ppo_body,
              CORRECTION_SFT: correction_body, ANSWER_LORA: answer_body,
              EVALUATION: lambda s, p: evaluation_body(s, p, examples)}
    return [_section(stage, run, body) for stage, body in bodies.items()]
