"""The run's headline figures, read once from its summaries: the report's cards and the terminal's
closing lines say the same thing. A fact is a *regression* when it moved the wrong way (ARES below
the baseline, the held-out score down, more degeneration after SFT than before RL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aresnb.data import registry as dataset_registry
from aresnb.data.registry import Dataset
from aresnb.data.schema import DataError
from aresnb.paths import ANSWER_LORA, BASELINE, CORRECTION_SFT, DATA, EVALUATION, PPO
from aresnb.present.report.parts import pct
from aresnb.stages.results import RunResults, read_run_dir
from aresnb.teacher import backends as teacher_backends


@dataclass(frozen=True)
class Fact:
    title: str
    value: str
    detail: str
    line: str  # the terminal's sentence
    regression: bool | None = None  # None: no direction to judge


def _ci(lo_hi: Any, fmt=pct) -> str:
    lo, hi = (lo_hi or [None, None])[:2]
    return "–" if lo is None or hi is None else f"{fmt(lo)} to {fmt(hi)}"


def win_rate_fact(ev: dict) -> Fact | None:
    if ev.get("win_rate") is None:
        return None
    n, judge = ev.get("judged_problems", ev.get("counts", {}).get("n")), ev.get("judge_model", "?")
    wr, ci = ev["win_rate"], _ci(ev.get("win_rate_ci95"))
    paper = ev.get("paper_win_rate")
    c = ev.get("counts") or {}
    # a forced choice over mostly ties is about 50% plus half the decisive margin: say what it is made of
    made_of = (f"; both orders {c['wins']} wins / {c['ties']} ties / {c['losses']} losses, decisive "
               f"{pct(ev.get('decisive_win_rate'))}" if c.get("wins") is not None else "")
    detail = (f"forced choice (paper protocol) on {n} test problems, 95% CI {ci}, judge {judge}{made_of}"
              + (f"; paper {paper:.1f}%" if paper else ""))
    return Fact("Win rate of ARES over the baseline", pct(wr), detail,
                f"win rate of ARES over the baseline: {pct(wr)} of {n} test problems (forced choice, 95% CI {ci})"
                f"{made_of}, judge {judge}", regression=wr < 0.5)


def accuracy_fact(ev: dict) -> Fact | None:
    acc = ev.get("accuracy") or {}
    pairs = []
    for key, row in acc.items():
        model, fmt = key.split("/", 1)
        if model == "baseline" and f"ares/{fmt}" in acc and row.get("Avg") is not None:
            pairs.append((fmt, row["Avg"], acc[f"ares/{fmt}"]["Avg"]))
    if not pairs:
        return None
    gains = [b - a for _, a, b in pairs]
    text = ", ".join(f"{fmt} {a:.1f}% → {b:.1f}% ({b - a:+.1f} points)" for fmt, a, b in pairs)
    return Fact("Answer accuracy, baseline → ARES (Avg)", " · ".join(f"{g:+.1f}" for g in gains) + " pts",
                text, f"answer accuracy (Avg): {text}", regression=any(g < 0 for g in gains))


def teacher_score_fact(ppo: dict) -> Fact | None:
    before, after = ppo.get("teacher_score_before"), ppo.get("teacher_score_after")
    if before is None or after is None:
        return None
    delta, ci = ppo.get("teacher_score_delta"), ppo.get("teacher_score_delta_ci95")
    interval = _ci(ci, lambda x: f"{x:+.3f}")
    n = ppo.get("eval_problems")
    detail = f"greedy val rationales (n={n}); change {delta:+.3f}, paired 95% CI {interval}" if delta is not None else ""
    return Fact("Held-out Teacher score before → after PPO", f"{before:.3f} → {after:.3f}", detail,
                f"held-out Teacher score (val, greedy): {before:.3f} → {after:.3f} over PPO"
                + (f" (change {delta:+.3f}, 95% CI {interval})" if delta is not None else ""),
                regression=delta is not None and delta < 0)


def degeneration_fact(corr: dict) -> Fact | None:
    rates = corr.get("val_rates") or {}
    if not {"before_rl", "after_rl", "after_sft"} <= set(rates):
        return None
    seq = ("before_rl", "after_rl", "after_sft")
    unfinished = " → ".join(pct(rates[k]["unfinished_sentence_rate"]) for k in seq)
    repeated = " → ".join(pct(rates[k]["repeated_sentence_rate"]) for k in seq)
    worse = any(rates["after_sft"][m] > rates["before_rl"][m] + 1e-12
                for m in ("unfinished_sentence_rate", "repeated_sentence_rate"))
    return Fact("Unfinished / repeated sentences (val)", unfinished,
                f"unfinished, before RL → after RL → after SFT; repeated sentences {repeated}",
                f"degeneration (val), before RL → after RL → after SFT: unfinished {unfinished}, repeated {repeated}",
                regression=worse)


def image_fact(answers: dict) -> Fact | None:
    ab = answers.get("image_ablation")
    if not ab:
        return None
    w, wo = ab["accuracy_with_image"], ab["accuracy_without_image"]
    return Fact("Image ablation (answer accuracy)", f"{w:.1f}% vs {wo:.1f}%",
                f"{ab.get('format', 'QCM-A')} head on the {ab.get('model', 'baseline')} model, with / with zeroed image features",
                f"image ablation ({ab.get('format', 'QCM-A')}): {w:.1f}% with image features, {wo:.1f}% with them zeroed",
                regression=None)


def headline_facts(run: RunResults) -> list[Fact]:
    """The five headline figures, those the run has so far."""
    ev = dict(run.summary(EVALUATION))
    found = [win_rate_fact(ev), accuracy_fact(ev), teacher_score_fact(dict(run.summary(PPO))),
             degeneration_fact(dict(run.summary(CORRECTION_SFT))), image_fact(dict(run.summary(ANSWER_LORA)))]
    return [f for f in found if f is not None]


def headline_lines(run_dir) -> list[str]:
    """The headline figures as terminal lines (a regression says so)."""
    lines = [f.line + ("  [regression]" if f.regression else "") for f in headline_facts(read_run_dir(run_dir))]
    return lines or ["no headline figures yet (stage 07 has not run)"]


def _dataset_record(data: dict) -> Dataset | None:
    """The record of the run's dataset; None when it cannot be found here (the banner then says its name)."""
    try:
        return dataset_registry.find(data.get("source", "?"), data.get("dataset_file"))
    except DataError:
        return None


def run_banner(run: RunResults, params: dict) -> tuple[str, str]:
    """('smoke' | 'paper', text): what data, model size and Teacher this run used."""
    data, model, teacher = params.get("data", {}), params.get("model", {}), params.get("teacher", {})
    problems = run.summary(DATA).get("problems") or {}
    sizes = " / ".join(f"{problems[s]}" for s in ("train", "val", "test") if s in problems)
    params_m = ((run.summary(BASELINE).get("model") or {}).get("parameters") or 0) / 1e6
    source = data.get("source", "?")
    record = _dataset_record(data)
    what_data = record.title if record is not None else source
    model_name = "a tiny multimodal T5 built from config" if model.get("base") == "tiny" else model.get("base", "?")
    # the rule-based reference Teacher makes a smoke check, whatever the data
    local_ref = teacher_backends.backend_for(bool(teacher.get("serve_local")),
                                             teacher.get("local_backend", "reference")) is teacher_backends.REFERENCE
    teacher_name = ("the local reference Teacher (deterministic rules, no LLM)" if local_ref
                    else f"Teacher {teacher.get('model', '?')}")
    text = (f"{what_data} ({sizes} train / val / test problems) · {model_name} "
            f"({params_m:.1f} M parameters) · {teacher_name}")
    smoke = (record is not None and record.generated) or model.get("base") == "tiny" or local_ref
    if smoke:
        return "smoke", ("Smoke check, not the paper's scale: " + text + ". It shows that every piece works and "
                         "moves the right way; the paper's numbers need its data, models and Teacher.")
    return "paper", "Paper-scale run: " + text + "."
