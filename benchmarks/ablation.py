"""What each half of ARES adds: the ablation arms over seeds (``ares_effect.py --arms``).

Per seed, one run of the embedded default with ``ares.rounds: 2`` and every arm
(``ares.arms: [rl_only, correction_only, every_round]``): one baseline, one stage 03/04 per round,
shared by the arms that read them. The arms, as this file names them, and the run's model each is:

    baseline         baseline          stage 02
    rl_only          rl_only           the round-1 PPO policy, no correction SFT
    correction_only  correction_only   the baseline fine-tuned on the Teacher's corrections of its own
                                       rationales, round 1's SFT recipe, no RL
    ares             round_1           RL then correction SFT, one round (the paper's code; as make reproduce)
    ares_2_rounds    ares              the same, two rounds

With ``--teacher-error R`` a second run per seed has the reference Teacher mis-grade a share R of
the checkable sentences (``teacher.reference_error_rate``) in scoring and correcting, never in
judging; it reuses the seed's data, baseline and baseline answer heads (copied: the same files,
so the runner and the trainers resume them) and runs one round with ``rl_only`` and
``correction_only``: the rows that say how much an erring Teacher costs.

Every figure is computed here from the runs' files (judgments, answer predictions, test
rationales): per seed and pooled over seeds, each pooled figure with an interval that resamples
seeds, then problems (:func:`aresnb.evaluation.intervals.hierarchical_bootstrap`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aresnb.data.synthetic_grader import FALSE, TRUE
from aresnb.evaluation.claims import claim_counts
from aresnb.evaluation.intervals import hierarchical_bootstrap, pooled_ratio
from aresnb.io import read_json
from aresnb.stages.results import ProblemOutcomes, read_problem_outcomes_dir
from aresnb.text.rationale_metrics import count_repeated_sentences, is_unfinished, sentence_texts, words

EXACT = "exact_teacher"
ALL_ARMS = "[rl_only,correction_only,every_round]"
SETTINGS = {  # overrides per setting, on top of the benchmark's own (seed, run name, output dir)
    EXACT: ["ares.rounds=2", f"ares.arms={ALL_ARMS}"],
    "erring_teacher": ["ares.rounds=1", "ares.arms=[rl_only,correction_only]"],
}
ARM_MODELS = {  # the arm -> the run's model name, per setting
    EXACT: {"baseline": "baseline", "rl_only": "rl_only", "correction_only": "correction_only",
            "ares": "round_1", "ares_2_rounds": "ares"},
    "erring_teacher": {"baseline": "baseline", "rl_only": "rl_only", "correction_only": "correction_only",
                       "ares": "ares"},
}
ARES_ARMS = ("ares", "ares_2_rounds")
RATES = {"win_rate": "forced choice, one random order (the paper's protocol)",
         "decisive_win_rate": "wins / (wins + losses) over both orders, ties left out",
         "tie_rate": "ties / problems over both orders (inconsistent verdicts and 'tie' answers)"}
BOOTSTRAP = 2000


def error_setting(rate: float) -> str:
    return f"teacher_error_{rate:g}"


def setting_overrides(setting: str, teacher_error: float | None) -> list[str]:
    if setting == EXACT:
        return SETTINGS[EXACT]
    return SETTINGS["erring_teacher"] + [f"teacher.reference_error_rate={teacher_error}"]


def arm_models(setting: str) -> dict[str, str]:
    return ARM_MODELS[EXACT if setting == EXACT else "erring_teacher"]


def share_baseline(src: Path, dst: Path) -> None:
    """Give run folder ``dst`` the data, baseline and baseline answer heads of ``src`` (copies with
    their times, so step keys and checkpoint fingerprints match) and their manifest entries."""
    if (dst / "manifest.json").exists():
        return  # a rerun resumes the folder it made
    dst.mkdir(parents=True, exist_ok=True)
    for part in ("01_data", "02_baseline", "06_answer_lora/baseline", "06_answer_lora/baseline_no_image"):
        if (src / part).exists():
            shutil.copytree(src / part, dst / part, dirs_exist_ok=True)
    manifest = read_json(src / "manifest.json")
    manifest["stages"] = {k: v for k, v in manifest["stages"].items() if k in ("01_data", "02_baseline")}
    manifest["run_dir"] = str(dst)
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))


# ---- per-problem data of one run -------------------------------------------------------------------


def _comparison(outcomes: ProblemOutcomes, subject: str, reference: str) -> dict[str, np.ndarray] | None:
    """Per judged problem: win / tie / loss over both orders and the forced-choice pick of the subject."""
    rows = outcomes.judgments.get((subject, reference))
    if rows is None:
        return None
    outcome = np.array([r["outcome"] for r in rows])
    first_pick = [r["sides"][0] for r in rows]
    return {"win": (outcome == "win").astype(float), "loss": (outcome == "loss").astype(float),
            "tie": (outcome == "tie").astype(float),
            "forced": np.array([p == subject for p in first_pick], dtype=float)}


def _correct(outcomes: ProblemOutcomes, model: str, fmt: str) -> np.ndarray | None:
    found = outcomes.correct.get((model, fmt))
    return None if found is None else np.array(found, dtype=float)


def _text_counts(texts: list[str], records: list[str]) -> dict[str, np.ndarray]:
    """Per rationale: what its degeneration rates and claim shares are made of."""
    out: dict[str, list] = {k: [] for k in ("sentences", "words", "repeated", "unfinished", "nonempty", "empty",
                                            "true", "false", "graded")}
    for text, record in zip(texts, records):
        n_sent = len(sentence_texts(text))
        out["sentences"].append(n_sent)
        out["words"].append(len(words(text)))
        out["repeated"].append(count_repeated_sentences(text)[0])
        out["unfinished"].append(float(is_unfinished(text)))
        out["nonempty"].append(float(n_sent > 0))
        out["empty"].append(float(n_sent == 0))
        c = claim_counts(text, record) if record else {TRUE: 0, FALSE: 0, "sentences": 0}
        out["true"].append(c[TRUE])
        out["false"].append(c[FALSE])
        out["graded"].append(c["sentences"])
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def run_data(run_dir: Path, setting: str) -> dict[str, dict]:
    """{arm: per-problem arrays} of one run (one seed of one setting)."""
    outcomes = read_problem_outcomes_dir(run_dir)
    test = outcomes.problems["test"]
    qids, records = [str(r["qid"]) for r in test], [r["image_record"] for r in test]
    out = {}
    for arm, model in arm_models(setting).items():
        if model not in outcomes.rationales:
            raise FileNotFoundError(f"{run_dir}: no test rationales of {model!r} (arm {arm}): has the run finished?")
        by_qid = outcomes.rationales[model]
        out[arm] = {
            "vs_baseline": None if arm == "baseline" else _comparison(outcomes, model, "baseline"),
            "vs_correction_only": _comparison(outcomes, model, "correction_only") if arm in ARES_ARMS else None,
            "qcm_a": _correct(outcomes, model, "QCM-A"), "qcmg_a": _correct(outcomes, model, "QCMG-A"),
            **_text_counts([by_qid.get(q, "") for q in qids], records),
        }
    return out


# ---- figures: per seed and pooled, every pooled one with a seed-level interval -----------------------

# name -> (numerator, denominator) of a ratio of sums over problems, from one arm's per-problem data
Ratio = Callable[[dict], tuple[np.ndarray, np.ndarray] | None]


def _vs(key: str, num: Callable[[dict], np.ndarray], den: Callable[[dict], np.ndarray]) -> Ratio:
    return lambda d: None if d.get(key) is None else (num(d[key]), den(d[key]))


def _ones(c: dict) -> np.ndarray:
    return np.ones_like(c["win"])


def win_ratios(key: str) -> dict[str, Ratio]:
    return {"win_rate": _vs(key, lambda c: c["forced"], _ones),
            "decisive_win_rate": _vs(key, lambda c: c["win"], lambda c: c["win"] + c["loss"]),
            "tie_rate": _vs(key, lambda c: c["tie"], _ones)}


TEXT_RATIOS: dict[str, Ratio] = {
    "true_claim_share": lambda d: (d["true"], d["graded"]),
    "false_claim_share": lambda d: (d["false"], d["graded"]),
    "repeated_rate": lambda d: (d["repeated"], d["sentences"]),
    "unfinished_rate": lambda d: (d["unfinished"], d["nonempty"]),
    "empty_rate": lambda d: (d["empty"], np.ones_like(d["empty"])),
    "sentences_per_rationale": lambda d: (d["sentences"], np.ones_like(d["sentences"])),
    "words_per_sentence": lambda d: (d["words"], d["sentences"]),
}


def _accuracy(fmt: str) -> Ratio:
    return lambda d: None if d.get(fmt) is None else (100.0 * d[fmt], np.ones_like(d[fmt]))


def _figure(seeds: list[dict], ratio: Ratio, seed: int) -> dict:
    groups = [g for g in (ratio(d) for d in seeds) if g is not None]
    if len(groups) != len(seeds):
        return {"pooled": None, "ci95": [None, None], "per_seed": [None] * len(seeds)}
    return {"pooled": pooled_ratio(groups), "ci95": list(hierarchical_bootstrap(groups, BOOTSTRAP, seed)),
            "per_seed": [pooled_ratio([g]) for g in groups]}


def _counts(seeds: list[dict], key: str) -> dict | None:
    if any(d.get(key) is None for d in seeds):
        return None
    per = [{k: int(d[key][k].sum()) for k in ("win", "tie", "loss")} for d in seeds]
    return {"wins": sum(p["win"] for p in per), "ties": sum(p["tie"] for p in per),
            "losses": sum(p["loss"] for p in per), "n": int(sum(len(d[key]["win"]) for d in seeds)),
            "per_seed": [{"wins": p["win"], "ties": p["tie"], "losses": p["loss"]} for p in per]}


def arm_result(seeds: list[dict], baseline: list[dict]) -> dict:
    """One arm's figures: ``pooled`` (with ``<figure>_ci95``) and ``per_seed``, in the benchmark's keys."""
    figures: dict[str, dict] = {}
    for key, prefix in (("vs_baseline", ""), ("vs_correction_only", "vs_correction_only.")):
        for name, ratio in win_ratios(key).items():
            figures[prefix + name] = _figure(seeds, ratio, seed=0)
    for fmt in ("qcm_a", "qcmg_a"):
        figures[f"accuracy.{fmt}"] = _figure(seeds, _accuracy(fmt), seed=0)
        paired = [{"d": s[fmt] - b[fmt]} if s.get(fmt) is not None and b.get(fmt) is not None else {}
                  for s, b in zip(seeds, baseline)]
        figures[f"accuracy_change.{fmt}"] = _figure(paired, lambda d: None if "d" not in d else
                                                    (100.0 * d["d"], np.ones_like(d["d"])), seed=0)
    for name, ratio in TEXT_RATIOS.items():
        figures[name] = _figure(seeds, ratio, seed=0)
    pooled: dict[str, Any] = {}
    per_seed: list[dict] = [{} for _ in seeds]
    for name, f in figures.items():
        _put(pooled, name, f["pooled"])
        _put(pooled, name + "_ci95", f["ci95"])
        for i, v in enumerate(f["per_seed"]):
            _put(per_seed[i], name, v)
    for key, prefix in (("vs_baseline", ""), ("vs_correction_only", "vs_correction_only")):
        c = _counts(seeds, key)
        if c is not None:
            target = pooled if not prefix else pooled.setdefault(prefix, {})
            target.update({k: c[k] for k in ("wins", "ties", "losses", "n")})
            for i, p in enumerate(c["per_seed"]):
                (per_seed[i] if not prefix else per_seed[i].setdefault(prefix, {})).update(p)
    return {"pooled": pooled, "per_seed": per_seed}


def _put(d: dict, dotted: str, value: Any) -> None:
    *heads, last = dotted.split(".")
    for h in heads:
        d = d.setdefault(h, {})
    d[last] = value


def setting_result(run_dirs: list[Path], setting: str, seeds: list[int]) -> dict:
    data = [run_data(r, setting) for r in run_dirs]
    arms = {arm: arm_result([d[arm] for d in data], [d["baseline"] for d in data]) for arm in arm_models(setting)}
    for arm, model in arm_models(setting).items():
        arms[arm]["model_in_run"] = model
    return {"seeds": seeds, "runs": [str(r) for r in run_dirs], "arms": arms}


# ---- verdicts ----------------------------------------------------------------------------------------


def _p(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _ci(ci: list) -> str:
    return "n/a" if not ci or ci[0] is None else f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}%"


def _win_detail(w: dict, ref: str = "the baseline") -> str:
    per = " ".join(_p(x) for x in w["per_seed_win_rate"])
    return (f"forced choice {_p(w['win_rate'])} (95% CI seeds then problems {_ci(w['win_rate_ci95'])}; per seed "
            f"{per}); decisive {_p(w['decisive_win_rate'])} ({_ci(w['decisive_win_rate_ci95'])}); "
            f"{w['wins']} wins / {w['ties']} ties / {w['losses']} losses against {ref} over both orders "
            f"(tie rate {_p(w['tie_rate'], 0)})")


def _wins(arm: dict, against: str | None = None) -> dict | None:
    """The win figures of an arm against the baseline (``against`` None) or ``vs_correction_only``."""
    pooled = arm["pooled"] if against is None else arm["pooled"].get(against) or {}
    if pooled.get("win_rate") is None:
        return None
    per_seed = [s if against is None else s.get(against) or {} for s in arm["per_seed"]]
    return {**{k: pooled.get(k) for k in ("win_rate", "win_rate_ci95", "decisive_win_rate", "decisive_win_rate_ci95",
                                          "tie_rate", "wins", "ties", "losses")},
            "per_seed_win_rate": [s.get("win_rate") for s in per_seed]}


def _above_half(ci: list) -> bool:
    return bool(ci) and ci[0] is not None and ci[0] > 0.5


def setting_verdicts(result: dict, label: str) -> list[dict]:
    """One line per outcome of issue 21, reached or not, for one setting (``label`` prefixes it)."""
    arms = result["arms"]
    out = []

    def line(name: str, ok: bool, detail: str) -> None:
        out.append({"outcome": f"{label}: {name}", "pass": bool(ok), "detail": detail})

    ares = _wins(arms["ares"])
    line("ARES vs baseline, decisive win rate >= 70% with its interval above 50%",
         ares["decisive_win_rate"] >= 0.70 and _above_half(ares["decisive_win_rate_ci95"]), _win_detail(ares))
    line("ARES vs baseline, forced-choice win rate >= 60% with its interval above 50%",
         ares["win_rate"] >= 0.60 and _above_half(ares["win_rate_ci95"]), _win_detail(ares))
    for fmt, name in (("qcm_a", "QCM-A"), ("qcmg_a", "QCMG-A")):
        a, b = arms["ares"]["pooled"]["accuracy"], arms["baseline"]["pooled"]["accuracy"]
        change = arms["ares"]["pooled"]["accuracy_change"][fmt]
        ci = arms["ares"]["pooled"]["accuracy_change"][f"{fmt}_ci95"]
        per = " ".join(f"{sb['accuracy'][fmt]:.1f}->{sa['accuracy'][fmt]:.1f}"
                       for sa, sb in zip(arms["ares"]["per_seed"], arms["baseline"]["per_seed"]))
        line(f"{name} accuracy of ARES >= the baseline's", change is not None and change >= 0,
             f"pooled {b[fmt]:.1f}% -> {a[fmt]:.1f}% (change {change:+.1f} points, 95% CI {ci[0]:+.1f} to "
             f"{ci[1]:+.1f}); per seed {per}")
    vs_co = _wins(arms["ares"], "vs_correction_only")
    if vs_co is not None:
        adds = _above_half(vs_co["win_rate_ci95"])
        worse = vs_co["win_rate_ci95"][1] is not None and vs_co["win_rate_ci95"][1] < 0.5
        words = ("RL adds something the correction alone does not: the judge prefers ARES to correction_only"
                 if adds else "the correction alone is better than RL + correction" if worse else
                 "no evidence that RL adds to the correction: ARES and correction_only cannot be told apart")
        line("RL adds to the correction SFT (ARES vs correction_only, forced-choice interval above 50%)", adds,
             f"{words}. " + _win_detail(vs_co, "correction_only"))
    co = _wins(arms["correction_only"])
    if co is not None:
        line("correction_only vs baseline (label cleaning alone), forced-choice interval above 50%",
             _above_half(co["win_rate_ci95"]), _win_detail(co))
    rl = _wins(arms["rl_only"])
    line("rl_only vs baseline, forced-choice interval above 50%", _above_half(rl["win_rate_ci95"]), _win_detail(rl))
    p_rl, p_ares = arms["rl_only"]["pooled"], arms["ares"]["pooled"]
    rates = ("repeated_rate", "unfinished_rate", "empty_rate")
    repaired = all(p_ares[r] <= p_rl[r] + 1e-12 for r in rates)
    line("SFT repairs what RL breaks: ARES's repeated, unfinished and empty rates at or below rl_only's", repaired,
         "; ".join(f"{r.replace('_', ' ')} baseline {_p(arms['baseline']['pooled'][r])} / rl_only {_p(p_rl[r])} / "
                   f"ARES {_p(p_ares[r])}" for r in rates))
    sb, sr = arms["baseline"]["pooled"]["sentences_per_rationale"], p_rl["sentences_per_rationale"]
    line("RL keeps its sentences: rl_only's sentences per rationale at least 2/3 of the baseline's",
         sr >= (2 / 3) * sb,
         f"sentences per rationale baseline {sb:.2f} / rl_only {sr:.2f} / ARES {p_ares['sentences_per_rationale']:.2f}; "
         f"words per sentence {arms['baseline']['pooled']['words_per_sentence']:.1f} / "
         f"{p_rl['words_per_sentence']:.1f} / {p_ares['words_per_sentence']:.1f}")
    if "ares_2_rounds" in arms:
        two = _wins(arms["ares_2_rounds"])
        line("ARES after 2 rounds vs baseline, forced-choice interval above 50%", _above_half(two["win_rate_ci95"]),
             _win_detail(two))
    return out


def error_cost_verdict(exact: dict, erring: dict, rate: float) -> dict:
    """How much the erring Teacher costs ARES: its win rate and accuracy against the exact Teacher's."""
    e, r = exact["arms"]["ares"]["pooled"], erring["arms"]["ares"]["pooled"]
    still = _above_half(r["win_rate_ci95"])
    return {"outcome": f"with a {rate:.0%}-wrong Teacher ARES still beats the baseline (forced-choice interval "
                       "above 50%)", "pass": still,
            "detail": f"forced choice {_p(e['win_rate'])} -> {_p(r['win_rate'])}, decisive "
                      f"{_p(e['decisive_win_rate'])} -> {_p(r['decisive_win_rate'])}, QCM-A "
                      f"{e['accuracy']['qcm_a']:.1f} -> {r['accuracy']['qcm_a']:.1f}%, QCMG-A "
                      f"{e['accuracy']['qcmg_a']:.1f} -> {r['accuracy']['qcmg_a']:.1f}%, false-claim share "
                      f"{_p(e['false_claim_share'])} -> {_p(r['false_claim_share'])} (exact -> erring Teacher)"}


# ---- the benchmark ---------------------------------------------------------------------------------

TARGET_S = 40 * 60.0  # the arms benchmark on 2 cores


def run_name(setting: str, seed: int) -> str:
    return f"ablation_seed{seed}" if setting == EXACT else f"ablation_{setting}_seed{seed}"


def run_arms(args: Any, run_seed: Callable[..., Path], git_commit: str | None) -> dict:
    """Every seed's runs (``--jobs`` at a time; a seed's erring-Teacher run after its exact one, from a
    copy of its baseline), then the figures and verdicts; writes and returns the report."""
    import os
    import time
    from concurrent.futures import ThreadPoolExecutor

    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    settings = [EXACT] + ([error_setting(args.teacher_error)] if args.teacher_error else [])
    recorded = json.loads(args.out.read_text()) if args.from_runs and args.out.exists() else {}
    started = time.time()

    def one(setting: str, seed: int, after=None) -> Path:
        if after is not None:
            share_baseline(after.result(), args.runs_dir / run_name(setting, seed))
        t = time.time()
        overrides = [*args.set, *setting_overrides(setting, args.teacher_error)]
        run = run_seed(args.params, seed, args.runs_dir, overrides, name=run_name(setting, seed))
        print(f"{setting} seed {seed}: done in {time.time() - t:.0f} s -> {run}", flush=True)
        return run

    runs: dict[str, list[Path]] = {}
    if args.from_runs:
        runs = {st: [args.runs_dir / run_name(st, s) for s in seeds] for st in settings}
    else:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # threads only wait on subprocesses
            exact = [pool.submit(one, EXACT, s) for s in seeds]
            erring = [pool.submit(one, st, s, e) for st in settings[1:] for s, e in zip(seeds, exact)]
            runs[EXACT] = [f.result() for f in exact]
            if erring:
                runs[settings[1]] = [f.result() for f in erring]
    elapsed = recorded.get("wall_time_s", time.time() - started)
    results = {st: setting_result(runs[st], st, seeds) for st in settings}
    lines = setting_verdicts(results[EXACT], "exact Teacher")
    if len(settings) > 1:
        lines += setting_verdicts(results[settings[1]], f"Teacher {args.teacher_error:.0%} wrong")
        lines.append(error_cost_verdict(results[EXACT], results[settings[1]], args.teacher_error))
    lines.append({"outcome": f"the arms benchmark <= {TARGET_S / 60:.0f} min on this machine",
                  "pass": elapsed <= TARGET_S,
                  "detail": f"{elapsed / 60:.1f} min for {len(seeds)} seeds x {len(settings)} setting(s), "
                            f"{recorded.get('jobs', args.jobs)} runs side by side"})
    report = {"benchmark": "ares_ablation", "git_commit": recorded.get("git_commit", git_commit),
              "params": args.params, "overrides": args.set, "seeds": seeds,
              "teacher_error": args.teacher_error, "arms": {st: arm_models(st) for st in settings},
              "definitions": {**RATES, "intervals": "95%, percentile bootstrap resampling seeds, then problems "
                                                    "within each drawn seed (2000 draws)",
                              "setting_overrides": {st: setting_overrides(st, args.teacher_error) for st in settings}},
              "settings": results, "verdicts": lines, "wall_time_s": round(elapsed, 1),
              "jobs": recorded.get("jobs", args.jobs),
              "machine": recorded.get("machine", {"cpus": os.cpu_count(), "load_average_end": os.getloadavg()})}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for v in lines:
        print(f"{'PASS' if v['pass'] else 'FAIL'}  {v['outcome']}: {v['detail']}")
    print(f"-> {args.out}")
    return report
