"""`aresnb results RUN_DIR [--effect ares_effect.json] [--ablation ares_ablation.json] [--bench benchmarks/results]
[--readme README.md]`: the README's result tables,
written from a run's ``summary.json`` files and the effect benchmark's JSON -- never typed by hand.

Two Markdown tables: what one run of the embedded default did, stage by stage (its wall time and
its figure), and the effect across seeds (each outcome pooled, per seed, and whether it was reached,
negatives included). With ``--readme`` the text between ``<!-- results:start -->`` and
``<!-- results:end -->`` is replaced; otherwise it is printed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aresnb.io import read_json
from aresnb.paths import ANSWER_LORA, BASELINE, CORRECTION_SFT, DATA, EVALUATION, PPO, STAGES, TEACHER_SCORES
from aresnb.stages.results import RunResults, read_run_dir

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def stage_figures(run: RunResults) -> dict[str, str]:
    """One sentence of evidence per stage, from its summary."""
    s = {stage: run.summary(stage) for stage in STAGES}
    out = {}
    if s[DATA]:
        p = s[DATA]["problems"]
        out[DATA] = f"{p['train']} / {p['val']} / {p['test']} problems; features {tuple(s[DATA]['feature_shape'])}"
    if s[BASELINE]:
        m = s[BASELINE]["model"]
        out[BASELINE] = f"{m['parameters'] / 1e6:.1f} M-parameter multimodal T5, {s[BASELINE]['train']['steps']} SFT steps"
    if s[TEACHER_SCORES]:
        t = s[TEACHER_SCORES]
        sig = t.get("signal") or {}
        out[TEACHER_SCORES] = (f"{t['samples']} samples scored (mean sentence score {_f(t['score_mean'], 2)}, "
                               f"{t['dropped']} dropped); the k samples of a prompt differ in score for "
                               f"{_pct(sig.get('prompts_with_varying_scores'), 0)} of prompts")
    if s[PPO]:
        t = s[PPO]
        lo, hi = t.get("teacher_score_delta_ci95") or [None, None]
        out[PPO] = (f"held-out Teacher score {_f(t['teacher_score_before'])} -> {_f(t['teacher_score_after'])} "
                    f"(change 95 % CI {_f(lo)} to {_f(hi)}); {t['passes']} passes, {t['optimizer_steps']} optimizer "
                    f"steps; KL(ref||pi) per token by pass " + ", ".join(_f(k["kl_k3"], 3) for k in t["kl_by_pass"]))
    if s[CORRECTION_SFT]:
        t = s[CORRECTION_SFT]
        r = t["val_rates"]
        out[CORRECTION_SFT] = (f"{t['n_problems']} rationales corrected by the Teacher ({t['corrected']} changed); "
                               "repeated sentences " + " / ".join(_pct(r[k]["repeated_sentence_rate"]) for k in
                                                                  ("before_rl", "after_rl", "after_sft"))
                               + " (before RL / after RL / after SFT)")
    if s[ANSWER_LORA]:
        a = s[ANSWER_LORA]["accuracy"]
        parts = [f"{m} {f} {a[m][f]['Avg']:.1f} %" for m in a for f in a[m]]
        out[ANSWER_LORA] = "accuracy (Avg): " + ", ".join(parts)
    if s[EVALUATION]:
        t = s[EVALUATION]
        lo, hi = t["win_rate_ci95"]
        c = t["counts"]
        out[EVALUATION] = (f"win rate of ARES {_pct(t['win_rate'])} (95 % CI {_pct(lo)} to {_pct(hi)}, one random "
                           f"order per problem, forced choice); both orders {c['wins']} / {c['ties']} / {c['losses']}")
    return out


def run_table(run_dir: str | Path) -> str:
    """The stages of one run: wall time (from the manifest) and the figure of each."""
    run = read_run_dir(run_dir)
    if run.manifest is None:
        raise FileNotFoundError(f"no readable manifest.json in {run_dir}: not a finished run")
    manifest = run.manifest
    figures = stage_figures(run)
    walls = {}
    for label, entry in manifest["stages"].items():
        walls[entry["stage"]] = walls.get(entry["stage"], 0.0) + float(entry.get("wall_time_s") or 0.0)
    lines = ["| stage | wall time | figure |", "|---|---:|---|"]
    for stage in STAGES:
        if stage in figures:
            lines.append(f"| {stage} | {walls.get(stage, 0):.0f} s | {figures[stage]} |")
    lines.append(f"| all | {sum(walls.values()):.0f} s | stage time of the run (manifest) |")
    return "\n".join(lines)


def effect_table(effect: dict[str, Any]) -> str:
    """The outcomes of the effect benchmark: reached or not, pooled and per seed."""
    seeds = ", ".join(str(s) for s in effect["seeds"])
    lines = [f"Seeds {seeds}; {effect['wall_time_s'] / 60:.1f} min for the benchmark.", "",
             "| outcome | reached | figures |", "|---|---|---|"]
    for v in effect["verdicts"]:
        lines.append(f"| {v['outcome']} | {'yes' if v['pass'] else '**no**'} | {v['detail']} |")
    return "\n".join(lines)


def _ci_pct(ci: list | None) -> str:
    return "–" if not ci or ci[0] is None else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"


def ablation_table(ablation: dict[str, Any]) -> str:
    """The arms benchmark (``benchmarks/ares_effect.py --arms``): per setting, one row per arm (pooled over
    seeds; intervals resample seeds, then problems), then every outcome, reached or not."""
    seeds = ", ".join(str(s) for s in ablation["seeds"])
    parts = [f"Seeds {seeds}; {ablation['wall_time_s'] / 60:.1f} min for the benchmark "
             f"({ablation['jobs']} runs side by side). Win rates against the baseline: forced choice = the paper's "
             "protocol (one random order, the judge must pick), decisive = wins / (wins + losses) over both orders; "
             "95 % intervals resample seeds, then problems."]
    for setting, result in ablation["settings"].items():
        parts += ["", f"**{setting.replace('_', ' ')}** (overrides: "
                  f"`{' '.join(ablation['definitions']['setting_overrides'][setting])}`):", "",
                  "| arm (model in the run) | forced choice % (CI) | wins / ties / losses | tie rate | decisive % (CI) "
                  "| QCM-A % | QCMG-A % | true / false claims | repeated / unfinished / empty | sentences per "
                  "rationale, words per sentence |",
                  "|---|---|---|---:|---|---:|---:|---|---|---|"]
        for arm, a in result["arms"].items():
            p = a["pooled"]
            win = "–" if p.get("win_rate") is None else f"{100 * p['win_rate']:.1f} ({_ci_pct(p['win_rate_ci95'])})"
            wtl = "–" if p.get("wins") is None else f"{p['wins']} / {p['ties']} / {p['losses']}"
            dec = "–" if p.get("decisive_win_rate") is None else \
                f"{100 * p['decisive_win_rate']:.1f} ({_ci_pct(p['decisive_win_rate_ci95'])})"
            acc = p["accuracy"]
            parts.append(
                f"| {arm} ({a['model_in_run']}) | {win} | {wtl} | {_pct(p.get('tie_rate'), 0)} | {dec} | "
                f"{_f(acc['qcm_a'], 1)} | {_f(acc['qcmg_a'], 1)} | {_pct(p['true_claim_share'], 0)} / "
                f"{_pct(p['false_claim_share'], 0)} | {_pct(p['repeated_rate'])} / {_pct(p['unfinished_rate'])} / "
                f"{_pct(p['empty_rate'])} | {_f(p['sentences_per_rationale'], 2)}, {_f(p['words_per_sentence'], 1)} |")
        for arm, a in result["arms"].items():
            vs = a["pooled"].get("vs_correction_only")
            if vs and vs.get("win_rate") is not None:
                parts += ["", f"`{arm}` against `correction_only` (what RL adds to the label cleaning): forced choice "
                          f"{100 * vs['win_rate']:.1f} % ({_ci_pct(vs['win_rate_ci95'])}), {vs['wins']} / {vs['ties']} / "
                          f"{vs['losses']} over both orders, decisive {_pct(vs['decisive_win_rate'])}."]
    parts += ["", "| outcome | reached | figures |", "|---|---|---|"]
    parts += [f"| {v['outcome']} | {'yes' if v['pass'] else '**no**'} | {v['detail']} |" for v in ablation["verdicts"]]
    return "\n".join(parts)


def ppo_speed_table(results_dir: str | Path) -> str | None:
    """The PPO throughput benchmark's ratios, one row per shape found in ``results_dir``."""
    files = sorted(Path(results_dir).glob("ppo_throughput_*.json"))
    if not files:
        return None
    lines = ["| shape | ours, shared critic / TRL | ours, separate critic / TRL | sequences/s (shared, separate, TRL) "
             "| machine |", "|---|---:|---:|---|---|"]
    for f in files:
        b = read_json(f)
        r, m = b["results"], b["machine"]
        seq = ", ".join(f"{r[k]['sequences_per_s']:.1f}" for k in ("ours_shared", "ours_separate", "trl"))
        lines.append(f"| {b['shape']['name']} | {b['ratios']['shared_vs_trl']:.2f}x | "
                     f"{b['ratios']['separate_vs_trl']:.2f}x | {seq} | {m['cpus']} CPUs, {m['processor']}, "
                     f"1 torch thread, load {b['load_average_1_5_15min']['start'][0]:.1f} at start |")
    return "\n".join(lines)


def teacher_speed_table(results_dir: str | Path) -> str | None:
    """The Teacher client benchmark: throughput against the ideal of each concurrency, the rate limits."""
    f = Path(results_dir) / "teacher_throughput.json"
    if not f.exists():
        return None
    b = read_json(f)
    lines = [f"| Teacher client, {b['latency_ms']:.0f} ms latency | requests/s | ideal | ratio | cached re-run calls |",
             "|---|---:|---:|---:|---:|"]
    for lv in b["levels"]:
        lines.append(f"| concurrency {lv['concurrency']} | {lv['requests_per_s']:.1f} | {lv['ideal_requests_per_s']:.0f} | "
                     f"{lv['ratio']:.2f} | {lv['cached_rerun_api_calls']} |")
    for rl in b.get("rate_limits", []):
        busiest = (f"; busiest {rl['window_s']:.0f} s: {rl['busiest_window_sent']:,.0f} ({rl['busiest_window_ratio']:.3f})"
                   if "busiest_window_sent" in rl else "")  # results written before the window was measured lack it
        lines.append(f"| `teacher.{rl['limit']}` {rl['limit_per_minute']:,.0f} | {rl['achieved_per_minute']:,.0f} per min"
                     f"{busiest} | | {rl['ratio']:.3f} | |")
    return "\n".join(lines)


def llm_teacher_table(results_dir: str | Path) -> str | None:
    """The pipeline with a small local LLM as Teacher and judge: whether it ran clean, and how far
    its sentence scores agree with the reference Teacher's on the same stage-03 samples."""
    f = Path(results_dir) / "llm_teacher_agreement.json"
    if not f.exists():
        return None
    b = read_json(f)
    total, agree = b["teacher_usage"]["total"], b["agreement_with_reference_stage03"]
    run_t, ref_t = agree["run_teacher"], agree["reference_teacher"]

    def num(x: float | None, fmt: str = ".2f") -> str:
        return "undefined" if x is None else format(x, fmt)

    rows = [("stages completed", "all 7" if b["all_stages_done"] else "no"),
            ("stage time", f"{b['stage_wall_time_s']:.0f} s"),
            ("Teacher and judge requests", f"{total['requests']} ({total['invalid_replies']} invalid replies)"),
            ("stage-03 sentences compared", str(agree["sentences"])),
            ("its scores (distinct values)", f"mean {run_t['mean']:.2f}, std {run_t['std']:.2f} "
                                             f"({', '.join(f'{x:g}' for x in run_t['distinct_scores'])})"),
            ("reference scores (distinct values)", f"mean {ref_t['mean']:.2f}, std {ref_t['std']:.2f} "
                                                   f"({', '.join(f'{x:g}' for x in ref_t['distinct_scores'])})"),
            ("Pearson / Spearman with the reference", f"{num(agree['pearson'])} / {num(agree['spearman'])}"),
            ("mean absolute difference", num(agree["mean_abs_difference"])),
            ("same reward sign (score vs 0.5)", num(agree["reward_sign_agreement"], ".0%"))]
    lines = [f"| {b['teacher_model']} as Teacher and judge | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def render(run_dir: str | Path, effect_file: str | Path | None, bench_dir: str | Path | None = None,
           ablation_file: str | Path | None = None) -> str:
    parts = [f"One run of `params/smoke.yaml` ({Path(run_dir).name}):", "", run_table(run_dir)]
    if effect_file is not None and Path(effect_file).exists():
        parts += ["", "The effect across seeds (`benchmarks/ares_effect.py`):", "", effect_table(read_json(effect_file))]
    if ablation_file is not None and Path(ablation_file).exists():
        parts += ["", "What each half of ARES adds: the ablation arms across seeds (`benchmarks/ares_effect.py --arms "
                  "--teacher-error 0.2`, `benchmarks/ablation.py`):", "", ablation_table(read_json(ablation_file))]
    speed = ppo_speed_table(bench_dir) if bench_dir is not None else None
    if speed:
        parts += ["", "PPO update throughput against TRL 0.11.4's seq2seq `PPOTrainer.step` on the same buffer "
                  "(`benchmarks/ppo_throughput.py`):", "", speed]
    teacher = teacher_speed_table(bench_dir) if bench_dir is not None else None
    if teacher:
        parts += ["", "The Teacher client against a local server with a fixed latency, and its client-side rate "
                  "limits (`benchmarks/teacher_throughput.py`):", "", teacher]
    llm = llm_teacher_table(bench_dir) if bench_dir is not None else None
    if llm:
        parts += ["", "`params/smoke_llm_teacher.yaml`: the same pipeline with a small LLM on the CPU as Teacher and "
                  "judge, constrained to each request's JSON schema (`benchmarks/llm_teacher_agreement.py`):", "", llm]
    return "\n".join(parts)


def update_readme(readme: str | Path, text: str) -> Path:
    """Replace the README's results section (between the markers) with ``text``."""
    readme = Path(readme)
    old = readme.read_text()
    if START not in old or END not in old:
        raise ValueError(f"{readme}: no {START} ... {END} section to replace")
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: f"{START}\n{text}\n{END}", old, flags=re.S)
    readme.write_text(new)
    return readme
