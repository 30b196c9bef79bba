"""`aresnb results RUN_DIR [--effect ares_effect.json] [--readme README.md]`: the README's result tables,
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
from aresnb.paths import (ANSWER_LORA, BASELINE, CORRECTION_SFT, DATA, EVALUATION, PPO, STAGES, TEACHER_SCORES,
                          RunPaths)

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _summary(paths: RunPaths, stage: str) -> dict:
    f = paths.summary_file(stage)
    return read_json(f) if f.exists() else {}


def stage_figures(paths: RunPaths) -> dict[str, str]:
    """One sentence of evidence per stage, from its summary."""
    s = {stage: _summary(paths, stage) for stage in STAGES}
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
    paths = RunPaths.from_dir(run_dir)
    manifest = read_json(paths.manifest)
    figures = stage_figures(paths)
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


def render(run_dir: str | Path, effect_file: str | Path | None) -> str:
    parts = [f"One run of `params/smoke.yaml` ({Path(run_dir).name}):", "", run_table(run_dir)]
    if effect_file is not None and Path(effect_file).exists():
        parts += ["", "The effect across seeds (`benchmarks/ares_effect.py`):", "", effect_table(read_json(effect_file))]
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
