"""Stage 07: win rate of ARES over the baseline, answer accuracy, rationale metrics; the tables.

Reads the test rationales of the baseline (02), of every round's SFT model (05; the last one is
ARES) and of the ablation arms (``ares.arms``: :mod:`aresnb.stages.arms`), stage 06's accuracies,
the test problems. Asks the judge (definitions in :mod:`aresnb.evaluation.winrate`) for every
comparison -- ARES vs the baseline (the headline, ``judgments.jsonl``), each arm vs the baseline,
ARES vs ``correction_only`` -- and reports each one's wins / ties / losses, tie rate, decisive and
forced-choice win rates (``comparisons``, ``tables/comparisons``). Writes the tables under
``tables/`` and ``summary.json``. Judges favour longer answers and RL changes length, so both
sides' mean length (words) is reported beside the win rate.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from aresnb.config import Config
from aresnb.data import categories
from aresnb.data import registry as dataset_registry
from aresnb.evaluation.accuracy import accuracy_gain, accuracy_table, model_label
from aresnb.evaluation.claims import claim_shares
from aresnb.evaluation.tables import write_table
from aresnb.evaluation.text_metrics import gold_metrics, load_similarity_model, word_count
from aresnb.evaluation.winrate import (OUTCOME_CODE, bootstrap_interval, judge_both_orders, judge_subset,
                                       single_order_codes, tally, teacher_judge, win_rate_table, win_statistics)
from aresnb.io import read_json, read_jsonl, write_jsonl
from aresnb.paper_numbers import ACCURACY_COLUMNS, model_size
from aresnb.paths import ANSWER_LORA, ARES_MODEL, BASELINE_MODEL, EVALUATION, RunPaths, round_model
from aresnb.progress import Progress, say
from aresnb.stages.arms import DESCRIPTIONS, comparison_name, comparisons, model_names, rationale_name
from aresnb.stages.driver import StageRun, drive
from aresnb.stages.results import rationale_file
from aresnb.teacher import endpoint_label, open_teacher, prompt_preview
from aresnb.text.rationale_metrics import rationale_quality

log = logging.getLogger(__name__)

STAGE = EVALUATION
WIN_RATE_DEFINITION = ("win_rate: the paper's protocol, one seeded random order per problem, the judge picks one "
                       "(forced choice): the share of problems where it picks ARES. Both orders: win = ARES "
                       "preferred in both orders, loss = the baseline in both, anything else (incl. "
                       "inconsistent verdicts) = tie; decisive_win_rate = wins/(wins+losses)")
METRIC_COLUMNS = ("bleu1", "bleu4", "rougeL", "similarity", "mean_words", "n")


def judge_model(cfg: Config) -> str:
    """evaluation.judge.model, else the Teacher's model."""
    return cfg.evaluation.judge.model or cfg.teacher.model


def test_rationales(paths: RunPaths, rounds: int, qids: Sequence[str],
                    arms: Sequence[str] = ()) -> dict[str, dict[str, str]]:
    """{model name: {qid: rationale}} for the baseline, every round that has them (the last must)
    and the arms (``rl_only``, ``correction_only``: they must)."""
    files = {BASELINE_MODEL: paths.rationales_file(BASELINE_MODEL, "test")}
    files.update({round_model(i): paths.rationales_file(round_model(i), "test") for i in range(1, rounds + 1)})
    model_arms = [a for a in arms if a != "every_round"]
    files.update({a: paths.rationales_file(a, "test") for a in model_arms})
    required = (BASELINE_MODEL, round_model(rounds), *model_arms)
    out = {}
    for name, f in files.items():
        if not (f.exists() or name in required):
            continue
        out[name] = rationale_file(f)
        missing = [q for q in qids if q not in out[name]]
        if missing:
            raise ValueError(f"{f}: no rationale for {len(missing)} test problem(s), e.g. qid {missing[:5]}")
    return out


def judge_test_set(cfg: Config, paths: RunPaths, problems: list[dict], texts: Mapping[str, Mapping[str, str]],
                   pairs: Sequence[tuple[str, str]]) -> tuple[dict, dict, float]:
    """Ask the judge (its own endpoint, ``evaluation.judge``: the paper has GPT-4o judge what Claude 3
    Haiku taught) about every (subject, reference) pair; ``texts``: {model name: {qid: rationale}}.

    Returns {pair: (verdicts, one record per judged problem)}, the judge's usage and the wall time.
    """
    t0 = time.time()
    judged = judge_subset(problems, cfg.evaluation.max_judge_problems, cfg.run.seed)
    by_qid = {p["qid"]: p for p in problems}
    out = {}
    with open_teacher(cfg, paths, role="judge") as judge:
        for subject, reference in pairs:
            what = "" if (subject, reference) == (ARES_MODEL, BASELINE_MODEL) else f" {subject} vs {reference}"
            asked = Progress(2 * len(judged), f"judge verdicts{what} (both orders)", unit="asks")
            verdicts, records = judge_both_orders(teacher_judge(judge, asked.callback()), judged, texts[reference],
                                                  texts[subject], cfg.run.seed, names=(subject, reference))
            for rec in records:
                p = by_qid[rec["qid"]]
                rec.update(categories=categories(p), **{reference: texts[reference][p["qid"]],
                                                        subject: texts[subject][p["qid"]]},
                           gold=p.get("solution", ""), question=p["question"], choices=list(p["choices"]),
                           answer=p["answer"])
            out[(subject, reference)] = (verdicts, records)
        usage = judge.usage()
    return out, usage, time.time() - t0


def comparison_summary(cfg: Config, verdicts: list, subject: Mapping[str, str], reference: Mapping[str, str]) -> dict:
    """One comparison's win statistics (:func:`aresnb.evaluation.winrate.win_statistics`), both sides'
    mean length and how many judged pairs were identical texts."""
    qids = [v.qid for v in verdicts]
    s, r = verdicts[0].names if verdicts else ("subject", "reference")
    return {
        **win_statistics(verdicts, cfg.evaluation.bootstrap_samples, cfg.run.seed),
        "mean_words": {s: float(np.mean([word_count(subject[q]) for q in qids])) if qids else None,
                       r: float(np.mean([word_count(reference[q]) for q in qids])) if qids else None},
        "identical_rationales": sum(subject[q].strip() == reference[q].strip() for q in qids),
    }


def comparisons_table(comps: Mapping[str, dict]) -> pd.DataFrame:
    """One row per comparison: counts over both orders, tie rate, decisive and forced-choice rates."""
    rows = []
    for c in comps.values():
        (dlo, dhi), (wlo, whi) = c["decisive_win_rate_ci95"], c["win_rate_ci95"]
        rows.append({"subject": c["subject"], "reference": c["reference"], "n": c["n"], "wins": c["wins"],
                     "ties": c["ties"], "losses": c["losses"], "tie_rate": c["tie_rate"],
                     "decisive_win_rate": c["decisive_win_rate"], "decisive_lo": dlo, "decisive_hi": dhi,
                     "win_rate": c["win_rate"], "win_rate_lo": wlo, "win_rate_hi": whi,
                     "identical": c["identical_rationales"]})
    return pd.DataFrame(rows)


def win_rate_summary(cfg: Config, verdicts: list, cats: Mapping[str, list[str]], baseline: Mapping[str, str],
                     ares: Mapping[str, str]) -> tuple[dict, pd.DataFrame]:
    """The headline win-rate figures (summary keys) and the per-category table."""
    ev, seed = cfg.evaluation, cfg.run.seed
    judged_qids = [v.qid for v in verdicts]
    overall = tally(verdicts)
    ci = bootstrap_interval([OUTCOME_CODE[v.outcome] for v in verdicts], ev.bootstrap_samples, seed)
    single = bootstrap_interval(single_order_codes(verdicts), ev.bootstrap_samples, seed)
    words = {q: (word_count(baseline[q]), word_count(ares[q])) for q in judged_qids}
    table = win_rate_table(verdicts, cats, ev.bootstrap_samples, seed, words)
    return {
        "judge_model": judge_model(cfg),
        "judge_endpoint": endpoint_label(cfg, "judge"),
        "win_rate_definition": WIN_RATE_DEFINITION,
        "win_rate": overall["single_order_win_rate"],
        "win_rate_ci95": single["win_rate"],
        "win_rate_protocol": "one seeded random order per problem, forced choice (the paper's)",
        "single_order": overall["single_order"],
        "both_orders_win_rate": overall["both_orders_win_rate"],
        "both_orders_win_rate_ci95": ci["win_rate"],
        "decisive_win_rate": overall["decisive_win_rate"],
        "decisive_win_rate_ci95": ci["decisive_win_rate"],
        "judged_problems": len(verdicts),
        # identical texts leave the judge nothing to prefer: many of these mean ARES barely moved
        "identical_rationales": sum(baseline[q].strip() == ares[q].strip() for q in judged_qids),
        "counts": {k: overall[k] for k in ("n", "wins", "ties", "losses", "ties_both_tie",
                                            "ties_inconsistent", "items_with_invalid_verdict")},
        "consistency_rate": overall["consistency_rate"],
        "position_bias": overall["position"],
        "lengths": {"baseline_mean_words": float(np.mean([w[0] for w in words.values()])),
                    "ares_mean_words": float(np.mean([w[1] for w in words.values()])),
                    "over": "the judged problems"},
        "win_rate_by_category": table.to_dict(orient="records"),
        "paper_win_rate": dataset_registry.dataset(cfg.data).reference_win_rate(model_size(cfg.model.base)),
        "bootstrap": {"samples": ev.bootstrap_samples, "seed": seed, "level": 0.95},
    }, table


def accuracy_summary(cfg: Config, paths: RunPaths) -> tuple[dict, pd.DataFrame | None]:
    """Stage 06's accuracies as summary keys and a table (with the paper's rows for ScienceQA)."""
    summary06 = paths.summary_file(ANSWER_LORA)
    if not summary06.exists():
        log.warning("%s is missing: no accuracy table (run stage 06 first)", summary06)
        return {"accuracy": None, "accuracy_gain_pts": None, "paper_accuracy_gain_pts": None}, None
    rounds = cfg.ares.rounds
    record = dataset_registry.dataset(cfg.data)
    table = accuracy_table(read_json(summary06), rounds, record.reference_accuracy(model_size(cfg.model.base)))
    return {
        "accuracy": {f"{r['key']}/{r['format']}": {"model": r["model"], "source": r["source"],
                                                  **{c: r[c] for c in ACCURACY_COLUMNS}}
                     for r in table.to_dict(orient="records")},
        "accuracy_gain_pts": accuracy_gain(table, rounds),
        "paper_accuracy_gain_pts": record.paper_accuracy_gain_pts,
    }, table


def diagnostics(cfg: Config, paths: RunPaths, problems: list[dict], rationales: dict[str, dict[str, str]]) -> dict:
    """Why the judge decides as it does, on test, at three points -- the baseline, after RL (the last
    round's PPO policy), after SFT (ARES): what the rationales claim (per family, against the
    synthetic records), their degeneration rates, and whether the baseline beats chance at all."""
    rounds = cfg.ares.rounds
    after_rl_file = paths.rl_rationales_file(rounds, "test")
    points = {"baseline": rationales[BASELINE_MODEL], "after_sft": rationales[round_model(rounds)]}
    if after_rl_file.exists():
        points = {"baseline": points["baseline"], "after_rl": rationale_file(after_rl_file),
                  "after_sft": points["after_sft"]}
    qids = [str(p["qid"]) for p in problems]
    claims = {k: claim_shares(r, problems) for k, r in points.items()}
    chance = float(np.mean([1 / len(p["choices"]) for p in problems]))
    base = (claims["baseline"] or {}).get("all") or {}
    return {
        "claims": claims if claims["baseline"] is not None else None,
        "degeneration": {k: rationale_quality([r.get(q, "") for q in qids]) for k, r in points.items()},
        "checks": {"baseline_correct_conclusion_share": base.get("correct_conclusion_share"), "chance": chance,
                   "baseline_beats_chance": (base.get("correct_conclusion_share") or 0.0) > chance
                   if base else None},
    }


def arm_figures(cfg: Config, paths: RunPaths, problems: list[dict], texts: Mapping[str, Mapping[str, str]]) -> dict:
    """Per evaluated model, on test: what it is, its degeneration rates (sentences per rationale and
    words per sentence among them), what its rationales claim (synthetic data) and stage 06's accuracy."""
    qids = [str(p["qid"]) for p in problems]
    summary06 = paths.summary_file(ANSWER_LORA)
    accuracy = read_json(summary06).get("accuracy", {}) if summary06.exists() else {}
    out = {}
    for name, by_qid in texts.items():
        claims = claim_shares(by_qid, problems)
        out[name] = {
            "description": DESCRIPTIONS.get(name, f"ARES after {name.replace('_', ' ')}"),
            "degeneration": rationale_quality([by_qid.get(q, "") for q in qids]),
            "claims": claims["all"] if claims else None,
            "accuracy": {fmt: cats.get("Avg") for fmt, cats in accuracy.get(name, {}).items()},
        }
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def run(cfg: Config, paths: RunPaths, round_index: int | None = None) -> dict[str, Any]:
    """Judge ARES against the baseline, collect accuracies and rationale metrics; write the
    judgments, the tables and ``summary.json``; return the summary."""
    return drive(cfg, paths, STAGE, _judge_and_measure, after=_closing_lines)


def _judge_and_measure(run: StageRun) -> dict[str, Any]:
    cfg, paths = run.cfg, run.paths
    cpu0 = time.process_time()
    rounds = cfg.ares.rounds
    problems = run.problems()["test"].to_list()
    qids = [str(p["qid"]) for p in problems]
    rationales = test_rationales(paths, rounds, qids, cfg.ares.arms)
    names = model_names(cfg)
    texts = {n: rationales[rationale_name(n, rounds)] for n in names}
    baseline, ares = texts[BASELINE_MODEL], texts[ARES_MODEL]
    # Importing sentence-transformers and loading MiniLM takes seconds: overlap it with judging,
    # which mostly waits on the Teacher's HTTP replies.
    pool = ThreadPoolExecutor(max_workers=1)
    similarity = pool.submit(load_similarity_model, cfg.evaluation.similarity_model)
    pool.shutdown(wait=False)

    judged, usage, judge_s = judge_test_set(cfg, paths, problems, texts, comparisons(names))
    for (subject, reference), (_, records) in judged.items():
        write_jsonl(paths.comparison_judgments_file(subject, reference), records)
    verdicts = judged[(ARES_MODEL, BASELINE_MODEL)][0]
    win, wr_table = win_rate_summary(cfg, verdicts, {str(p["qid"]): categories(p) for p in problems}, baseline, ares)
    comps = {comparison_name(*pair): comparison_summary(cfg, v, texts[pair[0]], texts[pair[1]])
             for pair, (v, _) in judged.items()}
    acc, acc_table = accuracy_summary(cfg, paths)

    t_sim = time.time()
    sim_model, sim_source = similarity.result()
    gold = [str(p.get("solution") or "") for p in problems]
    metrics = {name: gold_metrics(gold, [r[q] for q in qids], sim_model) for name, r in rationales.items()}
    metrics_df = pd.DataFrame([{"model": model_label(k, rounds), **{c: m.get(c) for c in METRIC_COLUMNS}}
                               for k, m in metrics.items()])
    sim_s = time.time() - t_sim

    tables = {
        "win_rate": write_table(wr_table, paths.tables_dir, "win_rate",
                                f"Win rate of ARES over the baseline (judge {judge_model(cfg)}; win_rate: one random "
                                "order per problem, forced choice (paper); wins/ties/losses: both orders; 95% "
                                "bootstrap intervals)", 3),
        "comparisons": write_table(comparisons_table(comps), paths.tables_dir, "comparisons",
                                   f"Every comparison the judge made (judge {judge_model(cfg)}): wins / ties / losses "
                                   "over both orders, tie rate, decisive win rate (ties left out), win_rate = the "
                                   "paper's forced choice in one random order; 95% bootstrap intervals over problems",
                                   3),
        "rationale_metrics": write_table(metrics_df, paths.tables_dir, "rationale_metrics",
                                         "Rationale metrics against the gold solutions (test split), computed as ScienceQA's evaluation: "
                                         "BLEU-1/4 (nltk, no smoothing), ROUGE-L F (rouge 1.0.1, empty predictions skipped), "
                                         "cosine similarity of all-MiniLM-L6-v2 embeddings", 3),
    }
    if acc_table is not None:
        tables["accuracy"] = write_table(acc_table.drop(columns="key"), paths.tables_dir, "accuracy_evaluation",
                                         "Answer accuracy (%) by category, baseline and ARES", 2)
    return {
        "stage": STAGE,
        **win,
        "tie_rate": comps[comparison_name(ARES_MODEL, BASELINE_MODEL)]["tie_rate"],
        "comparisons": comps,
        "test_problems": len(problems),
        **acc,
        "rationale_metrics": metrics,
        **diagnostics(cfg, paths, problems, rationales),
        "arms": arm_figures(cfg, paths, problems, texts),
        "similarity_model": {"requested": cfg.evaluation.similarity_model, "used": sim_source},
        "teacher_usage": usage,
        "tables": tables,
        "timing_s": {"judge": round(judge_s, 2), "rationale_metrics_after_judging": round(sim_s, 2)},
        "cpu_time_s": round(time.process_time() - cpu0, 2),  # all threads of this process
    }


def _closing_lines(run: StageRun, summary: dict) -> None:
    for c in summary["comparisons"].values():
        say(f"judge {summary['judge_model']}, {c['subject']} vs {c['reference']}: {c['wins']} wins / {c['ties']} ties / "
            f"{c['losses']} losses over both orders (tie rate {c['tie_rate']:.0%}, decisive {_pct(c['decisive_win_rate'])}); "
            f"forced choice {c['win_rate']:.1%}")
    lo, hi = summary["win_rate_ci95"]
    say(f"judge {summary['judge_model']}: ARES preferred on {summary['win_rate']:.1%} of {summary['judged_problems']} "
        f"test problems (95% CI {lo:.1%}-{hi:.1%})")


def request_preview() -> str:
    """The judge request the Teacher gets (system and user message, placeholders for the problem)."""
    return prompt_preview("judge")


@dataclass(frozen=True)
class EvaluationResult:
    """Stage 07 finished: what notebook 07 shows."""

    summary: dict
    judgments: dict[str, dict]  # ARES vs the baseline: the judge's records by qid
    tables: dict[str, pd.DataFrame]  # win_rate, comparisons, rationale_metrics, accuracy (when run)


def load(cfg: Config, paths: RunPaths, round_index: int | None = None) -> EvaluationResult:
    """The finished stage: summary, judged records by qid, its tables (DataFrames)."""
    summary = read_json(paths.summary_file(STAGE))
    return EvaluationResult(
        summary=summary,
        judgments={r["qid"]: r for r in read_jsonl(paths.judgments_file)},
        tables={name: pd.read_csv(files["csv"]) for name, files in summary["tables"].items()},
    )
