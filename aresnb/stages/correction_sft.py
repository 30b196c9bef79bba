"""Stage 05: the Teacher corrects the RL model's rationales, then SFT on them from the RL checkpoint.

The same stage is the ``correction_only`` ablation arm (``arm="correction_only"``, ``ares.arms``):
the baseline takes the PPO policy's place -- its own greedy train rationales are corrected and it is
fine-tuned on them with the same recipe, seed and train problems as round 1 (so the same number of
SFT steps), without any RL. Comparing ARES with it says what the RL adds to the label cleaning.

1. the round's PPO policy writes one greedy rationale per train problem (and for val and test:
   the after-RL rates and the panels),
2. sentences that repeat an earlier one are removed,
3. the Teacher corrects each rationale (:mod:`aresnb.sft.corrections` says what each outcome means),
4. the corrected rationales replace the train solutions and the one trainer (:mod:`aresnb.sft.trainer`)
   fine-tunes on QCM-E starting FROM the PPO policy; the result enters the next round,
5. the degeneration rates of greedy val rationales before RL, after RL and after SFT.

Resumable: each generation is written once and reused, the Teacher's reply cache makes repeated
requests free, and the trainer resumes from its last checkpoint (whose fingerprint covers the SFT
examples, so new corrections never resume an old run). The generated artefacts are tied to the
step's inputs key (:meth:`aresnb.stages.driver.StageRun.inputs_key`: parameters + the corrected
model's weights) and discarded when it changes.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from aresnb.config import Config
from aresnb.io import read_json, read_jsonl, write_json, write_jsonl
from aresnb.model.distributed import default_device
from aresnb.model.generation import generate_rationales
from aresnb.model.multimodal_t5 import load_rationale_model
from aresnb.model.tokenizer import load_tokenizer
from aresnb.paths import BASELINE_MODEL, CORRECTION_ONLY, CORRECTION_SFT, RunPaths, round_model
from aresnb.progress import Progress, say
from aresnb.sft.corrections import correction_row, select_problems, summarize_corrections
from aresnb.sft.examples import make_examples
from aresnb.sft.trainer import train_seq2seq
from aresnb.stages.checks import check_corrections
from aresnb.stages.driver import StageRun, drive
from aresnb.teacher import CorrectionItem, ProblemView, ScoreItem, endpoint, open_teacher, prompt_preview
from aresnb.text.rationale_metrics import dedupe_sentences, rationale_quality
from aresnb.text.sentences import split_sentences

STAGE = CORRECTION_SFT
EVAL_SPLITS = ("val", "test")
RATES_DEFINITION = {
    "repeated_sentence_rate": "sentences repeating an earlier sentence of the same rationale / all sentences",
    "unfinished_sentence_rate": "rationales whose last sentence lacks . ! or ? / non-empty rationales",
    "repeated_word_rate": "words equal to the previous word / all words",
}


# ---- resumable artefacts -----------------------------------------------------------------------


def reset_if_inputs_changed(paths: RunPaths, round_index: int, fp: str, arm: str | None = None) -> bool:
    """Discard artefacts made from other inputs (True when something was discarded)."""
    state = paths.correction_inputs_file(round_index, arm)
    if state.exists() and read_json(state).get("fingerprint") == fp:
        return False
    stage_dir = paths.stage_dir(STAGE, round_index, arm)
    stale = state.exists()
    for name in ("checkpoints", "model"):
        if (stage_dir / name).exists():
            shutil.rmtree(stage_dir / name)
            stale = True
    files = [paths.rl_rationales_file(round_index, s, arm) for s in ("train", *EVAL_SPLITS)]
    files += [paths.before_rl_rationales_file(round_index, "val", arm), paths.corrections_file(round_index, arm),
              paths.metrics_file(STAGE, round_index, arm)]
    for f in files:
        if f.exists():
            f.unlink()
            stale = True
    write_json(state, {"fingerprint": fp})
    return stale


def cached_rationales(path: Path, qids: Sequence[str], make: Callable[[], dict[str, str]]) -> dict[str, str]:
    """``{qid: rationale}`` from ``path`` if it covers exactly ``qids``, else ``make()`` and save."""
    rows = read_jsonl(path)
    if rows and [r["qid"] for r in rows] == list(qids):
        return {r["qid"]: r["rationale"] for r in rows}
    out = make()
    write_jsonl(path, [{"qid": q, "rationale": out[q]} for q in qids])
    return out


# ---- the stage ---------------------------------------------------------------------------------


def _greedy(model, tokenizer, problems: list[dict], features: np.ndarray, cfg: Config) -> dict[str, str]:
    rows = generate_rationales(
        model, tokenizer, problems, features, num_samples=1, do_sample=False,
        max_new_tokens=cfg.correction.max_new_tokens, batch_size=cfg.correction.sft.gen_batch_size,
        max_source_length=cfg.model.max_source_length, seed=cfg.run.seed, use_caption=cfg.data.use_caption,
        mixed_precision=cfg.run.mixed_precision,
    )
    return {str(r["qid"]): r["rationale"] for r in rows}


def _load_model(path: Path):
    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"stage 05 needs a saved model at {path}: run the earlier stages of this round first")
    model = load_rationale_model(path).to(default_device())
    model.eval()
    return model, load_tokenizer(path)


def _round_train(run: StageRun) -> tuple[list[dict], np.ndarray]:
    """The train problems corrected this round (seeded subset) and their features."""
    train_all = [dict(r) for r in run.problems()["train"]]
    rows_idx = select_problems(len(train_all), run.cfg.correction.max_problems, run.cfg.run.seed, run.round_index)
    return [train_all[i] for i in rows_idx], run.features("train")[rows_idx]


def _where(round_index: int, arm: str | None) -> str:
    """The step's name in logs: ``round_<i>`` or the arm's."""
    return arm or f"round_{round_index}"


def heavy_step(run: StageRun) -> dict:
    """SFT on the corrections (``corrections.parquet``), from the model they correct (the round's
    PPO policy, or the baseline for ``correction_only``); the main process saves the model. The
    trainer resumes from its checkpoints. The seed is round 1's for the arm: the same SFT, no RL."""
    cfg, paths, round_index, arm = run.cfg, run.paths, run.round_index, run.arm
    train, features = _round_train(run)
    corrections = pd.read_parquet(paths.corrections_file(round_index, arm), columns=["qid", "target"])
    examples = make_examples(train, "QCM-E", rationales=dict(zip(corrections["qid"].astype(str), corrections["target"])),
                             use_caption=cfg.data.use_caption)
    model, tokenizer = _load_model(paths.model_to_correct(round_index, arm))
    trained = train_seq2seq(model, tokenizer, examples, features, cfg.correction.sft,
                            paths.stage_dir(STAGE, round_index, arm), model_dir=paths.sft_model_dir(round_index, arm),
                            max_source_length=cfg.model.max_source_length,
                            max_target_length=cfg.model.max_target_length, seed=cfg.run.seed + round_index,
                            mixed_precision=cfg.run.mixed_precision,
                            gradient_checkpointing=cfg.model.gradient_checkpointing,
                            desc=f"SFT on corrections, {_where(round_index, arm).replace('_', ' ')}",
                            tracking=run.tracking(run.label, {"train": vars(cfg.correction.sft), "round": round_index,
                                                              "arm": arm}))
    return trained.summary()


def run(cfg: Config, paths: RunPaths, round_index: int | None = 1, arm: str | None = None) -> dict:
    """Correct the RL policy's train rationales with the Teacher, SFT on them, measure the effect.
    ``arm="correction_only"``: the same on the baseline, without RL (the ablation)."""
    if arm not in (None, CORRECTION_ONLY):
        raise ValueError(f"stage 05 runs for the ARES rounds (arm None) or the {CORRECTION_ONLY!r} arm, not {arm!r}")
    return drive(cfg, paths, STAGE, _correct_and_train, round_index, arm, heavy=heavy_step)


def _correct_and_train(run: StageRun) -> dict:
    cfg, paths, round_index, arm = run.cfg, run.paths, run.round_index, run.arm
    start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - start - sum(timings.values()), 2)

    policy_dir = paths.model_to_correct(round_index, arm)
    restarted = reset_if_inputs_changed(paths, round_index, run.inputs_key(), arm)

    data = run.problems()
    train, train_features = _round_train(run)
    split_data = {s: ([dict(r) for r in data[s]], run.features(s)) for s in EVAL_SPLITS}
    qids = {s: [str(p["qid"]) for p in probs] for s, (probs, _) in split_data.items()}
    train_qids = [str(p["qid"]) for p in train]

    lap("load_data")
    # 1. the RL policy's greedy rationales: train (to correct), val (the after-RL rates), test (panel)
    model, tokenizer = _load_model(policy_dir)
    rl_train = cached_rationales(paths.rl_rationales_file(round_index, "train", arm), train_qids,
                                 lambda: _greedy(model, tokenizer, train, train_features, cfg))
    rl_eval = {s: cached_rationales(paths.rl_rationales_file(round_index, s, arm), qids[s],
                                    lambda s=s: _greedy(model, tokenizer, *split_data[s], cfg))
               for s in EVAL_SPLITS}

    lap("generate_rl")
    # 2-3. de-duplicate, then the Teacher corrects (its cache makes a restarted stage free)
    items = [CorrectionItem(ProblemView.from_row(p), dedupe_sentences(rl_train[q])[0]) for p, q in zip(train, train_qids)]
    with open_teacher(cfg, paths) as teacher:
        results = teacher.correct(items, progress=Progress(len(items), "Teacher corrections", unit="rationales").callback())
        usage = teacher.usage()
    rows = [correction_row(q, rl_train[q], r) for q, r in zip(train_qids, results)]
    pd.DataFrame(rows).to_parquet(paths.corrections_file(round_index, arm), index=False)
    check_corrections(rows, paths.corrections_file(round_index, arm))

    lap("teacher")
    # 4. SFT on the corrections, from the RL checkpoint: the heavy step (it resumes from its checkpoints)
    del model
    trained = run.heavy()
    model_dir = paths.sft_model_dir(round_index, arm)
    model, tokenizer = _load_model(model_dir)

    lap("sft")
    after_sft = {}
    for s in EVAL_SPLITS:
        out = _greedy(model, tokenizer, *split_data[s], cfg)
        write_jsonl(paths.rationales_file(arm or round_model(round_index), s), [{"qid": q, "rationale": out[q]} for q in qids[s]])
        after_sft[s] = out

    lap("generate_sft")
    # 5. the paper's motivation, measured on val: before RL, after RL, after SFT (the arm has no RL:
    # what it corrects is the baseline itself)
    before, before_source = before_rl_val_rationales(cfg, paths, round_index, split_data["val"], qids["val"], arm)
    rates = {
        "before_rl": rationale_quality([before[q] for q in qids["val"]]),
        **({} if arm else {"after_rl": rationale_quality([rl_eval["val"][q] for q in qids["val"]])}),
        "after_sft": rationale_quality([after_sft["val"][q] for q in qids["val"]]),
    }
    train_rates = {
        "rl": rationale_quality([r["rl_rationale"] for r in rows]),
        "deduped": rationale_quality([r["deduped"] for r in rows]),
        "sft_target": rationale_quality([r["target"] for r in rows]),
    }
    lap("rates")
    summary = {
        "stage": STAGE,
        "round": round_index,
        **({"arm": arm, "corrected_model": str(policy_dir)} if arm else {}),
        **summarize_corrections(rows),
        "val_rates": rates,
        "train_rates": train_rates,
        "rates_definition": RATES_DEFINITION,
        "before_rl_model": str(paths.policy_entering_round(round_index)),
        "before_rl_rationales": before_source,
        "max_new_tokens": cfg.correction.max_new_tokens,
        "teacher": usage,
        "sft": trained,
        "processes": trained["processes"],
        "restarted_with_new_inputs": restarted,
        "model_dir": str(model_dir),
        "timings_s": timings,
    }
    say(f"{arm + ': ' if arm else ''}corrections: {summary['corrected']} corrected, {summary['unchanged']} unchanged, "
        f"{summary['fallback']} fallback; unfinished sentences (val) "
        + " → ".join(f"{rates[k]['unfinished_sentence_rate']:.1%}" for k in rates)
        + f" ({' → '.join(k.replace('_', ' ').replace('rl', 'RL').replace('sft', 'SFT') for k in rates)})")
    return summary


def before_rl_val_rationales(cfg: Config, paths: RunPaths, round_index: int, val: tuple,
                             qids: list[str], arm: str | None = None) -> tuple[dict[str, str], str]:
    """Val rationales of the model entering the round and where they came from: the file its
    stage wrote (baseline or the previous round), else generated here with this stage's settings."""
    name = BASELINE_MODEL if round_index == 1 else round_model(round_index - 1)
    path = paths.rationales_file(name, "val")
    rows = read_jsonl(path)
    if rows and {str(r["qid"]) for r in rows} >= set(qids):
        by = {str(r["qid"]): r["rationale"] for r in rows}
        return {q: by[q] for q in qids}, str(path)
    model, tokenizer = _load_model(paths.policy_entering_round(round_index))
    own = paths.before_rl_rationales_file(round_index, "val", arm)
    return cached_rationales(own, qids, lambda: _greedy(model, tokenizer, *val, cfg)), str(own)


def request_preview(style: str = "aresnb") -> str:
    """The correct request the Teacher gets in ``style`` (teacher.prompt_style): system and user
    message, placeholders for the problem."""
    return prompt_preview("correct", style)


@dataclass(frozen=True)
class CorrectionSFTResult:
    """Stage 05 finished (one round, or the correction_only arm): what notebook 05 shows."""

    summary: dict  # with the val rates before RL, after RL and after SFT
    corrections: pd.DataFrame  # corrections.parquet: one row per corrected train rationale


def load(cfg: Config, paths: RunPaths, round_index: int | None = 1, arm: str | None = None) -> CorrectionSFTResult:
    """The finished round (or arm): summary, the corrections (DataFrame)."""
    return CorrectionSFTResult(
        summary=read_json(paths.summary_file(STAGE, round_index, arm)),
        corrections=pd.read_parquet(paths.corrections_file(round_index, arm)),
    )


# ---- the notebook's panel: on-demand Teacher calls ---------------------------------------------


def teacher_callbacks(cfg: Config, paths: RunPaths, force: bool = False) -> tuple:
    """(scorer, corrector, teacher) for the rationale panel and the Figure-3 page when Teacher
    calls are cheap, else Nones: ``scorer(problem, text)`` -> the sentences' scores,
    ``corrector(problem, rl_text)`` -> the correction of the de-duplicated text.

    Cheap = a deterministic backend (the project's local reference Teacher: milliseconds, no
    cost; ``aresnb.teacher.backends``); any other endpoint is only called when ``force`` is set. Replies go through the Teacher's cache like any other.
    Close the returned teacher when done.
    """
    if not (force or endpoint(cfg).backend.deterministic):
        return None, None, None
    teacher = open_teacher(cfg, paths)

    def scorer(problem: dict, text: str) -> list | None:
        sentences = [s.text for s in split_sentences(text)]
        return teacher.score_sentences([ScoreItem(ProblemView.from_row(problem), sentences)])[0].scores

    def corrector(problem: dict, rl_text: str) -> str | None:
        item = CorrectionItem(ProblemView.from_row(problem), dedupe_sentences(rl_text)[0])
        return teacher.correct([item])[0].text

    return scorer, corrector, teacher
