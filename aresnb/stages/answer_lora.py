"""Stage 06: answer inference with a LoRA adapter on the rationale model (ARES, paper Figure 4).

For every model the run evaluates (the baseline, ARES once its last round exists, and the ablation
arms of ``ares.arms``: :mod:`aresnb.stages.arms`) and every input format, a peft LoRA adapter is trained on the train split to write "The answer is (X).", saved in
peft's format, reloaded with ``PeftModel.from_pretrained`` and evaluated on test: regex extraction
with a seeded random fallback (failures counted), accuracy by ScienceQA category.

- QCM-A: question, context, options.
- QCMG-A, as MM-CoT does it: the head trains with the GOLD rationale in its input and is tested
  with the model's own greedy test rationale (written by stage 02 or 05), so the accuracy measures
  how well the model's rationales lead to the answer. The gold rationale has the form the model
  writes: its QCM-E target, the solution (MM-CoT's models write lecture + solution, so there the
  gold is both; ours write the solution alone, and a lecture seen only in training would be an
  input the head never gets at test).

The image ablation trains the same QCM-A head on the baseline with the image features zeroed.

Training every head's adapter is the heavy step (:mod:`aresnb.stages.launch`; under ``accelerate
launch`` with ``run.num_processes`` > 1); each distinct example set is tokenised once and shared
by the heads that train on it. The kernel then evaluates each saved adapter. The summary gives
each head's training and evaluation time (``head_time_s``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aresnb.config import Config
from aresnb.data import registry as dataset_registry
from aresnb.evaluation.accuracy import accuracy_by_category, heads_table
from aresnb.evaluation.tables import write_table
from aresnb.io import read_json, read_jsonl, write_json, write_jsonl
from aresnb.model.checkpoints import dir_signature, fingerprint
from aresnb.model.distributed import default_device
from aresnb.model.multimodal_t5 import load_rationale_model
from aresnb.model.tokenizer import load_tokenizer
from aresnb.paths import ANSWER_LORA, BASELINE_MODEL, RunPaths
from aresnb.progress import say
from aresnb.sft.answer import attach_lora, load_answer_model, predict_answers, trainable_fraction
from aresnb.sft.examples import TokenizedExamples, make_examples
from aresnb.sft.trainer import train_seq2seq
from aresnb.stages.arms import evaluated_models
from aresnb.stages.driver import StageRun, drive

STAGE = ANSWER_LORA
NO_IMAGE = "baseline_no_image"  # the ablation's folder under 06_answer_lora/


def models_in_run(cfg: Config, paths: RunPaths) -> dict[str, tuple[Path, str]]:
    """{name: (model dir, rationale-file name)}: every model the run evaluates (:mod:`aresnb.stages.arms`)."""
    return {name: (m.model_dir, m.rationale_name) for name, m in evaluated_models(cfg, paths).items()}


def test_rationales(paths: RunPaths, rationale_name: str, problems: list[dict]) -> dict[str, str]:
    """The model's own greedy test rationales, as its stage (02 or 05) wrote them."""
    file = paths.rationales_file(rationale_name, "test")
    have = {r["qid"]: r["rationale"] for r in read_jsonl(file)}
    missing = [p["qid"] for p in problems if p["qid"] not in have]
    if missing:
        raise FileNotFoundError(f"{file}: no greedy rationale for {len(missing)} test problem(s), e.g. {missing[:3]}; "
                                "run the stage that writes it (02 or 05) first")
    return have


def _answer_source_length(cfg: Config, fmt: str) -> int:
    # QCMG-A carries a rationale in its input: room for one as long as a QCM-E target.
    return cfg.model.max_source_length + (cfg.model.max_target_length if fmt == "QCMG-A" else 0)


@dataclass(frozen=True)
class Head:
    """One LoRA answer head: which model it sits on, its input format, whether it sees the image."""

    name: str  # its folder under 06_answer_lora/: a model name, or NO_IMAGE for the ablation
    model_dir: Path
    fmt: str
    use_image: bool
    rationale_name: str  # whose greedy test rationales a QCMG-A head reads

    @property
    def label(self) -> str:
        return f"{self.name}/{self.fmt}"


def plan_heads(cfg: Config, paths: RunPaths) -> list[Head]:
    """Every (model, format) head, then what the image ablation needs (the baseline's QCM-A head
    with the image, if the formats lack it, and the same head without)."""
    heads = [Head(name, model_dir, fmt, True, rationale_name)
             for name, (model_dir, rationale_name) in models_in_run(cfg, paths).items() for fmt in cfg.answer.formats]
    if cfg.answer.image_ablation:
        if "QCM-A" not in cfg.answer.formats:
            heads.append(Head(BASELINE_MODEL, paths.baseline_model_dir, "QCM-A", True, BASELINE_MODEL))
        heads.append(Head(NO_IMAGE, paths.baseline_model_dir, "QCM-A", False, BASELINE_MODEL))
    return heads


def heavy_step(run: StageRun) -> dict:
    """Train every head's adapter (every launched process; the main one saves each adapter).

    Each distinct example set is tokenised once and shared: QCM-A by every QCM-A head (the
    ablation sees the same tokens without features), QCMG-A (gold rationales) by every QCMG-A head,
    as long as the models share a tokenizer; the train features are loaded once.
    """
    train = run.problems()["train"].to_list()
    features = run.features("train")
    tokenized: dict[tuple, TokenizedExamples] = {}
    heads, processes = {}, 1
    for head in plan_heads(run.cfg, run.paths):
        heads[head.label], processes = train_head(run, head, train, features, tokenized)
    return {"heads": heads, "processes": processes}


def train_head(run: StageRun, head: Head, train: list[dict], features: np.ndarray,
               tokenized: dict[tuple, TokenizedExamples]) -> tuple[dict, int]:
    """Train and save one head's adapter on ``train``; ``tokenized`` caches the example sets by
    (format, tokenizer). Returns (what :func:`evaluate_head` reads, the processes it trained on)."""
    cfg, paths = run.cfg, run.paths
    t0, cpu0 = time.time(), time.process_time()
    tokenizer = load_tokenizer(head.model_dir)
    key = (head.fmt, fingerprint(tokenizer.backend_tokenizer.to_str()))
    if key not in tokenized:
        # No rationales given: a QCMG-A source carries the gold solution (aresnb.data.prompts).
        tokenized[key] = TokenizedExamples(
            tokenizer, make_examples(train, head.fmt, use_caption=cfg.data.use_caption),
            _answer_source_length(cfg, head.fmt), cfg.answer.max_new_tokens)
    data = tokenized[key] if head.use_image else tokenized[key].without_features()
    base = load_rationale_model(head.model_dir, use_image=None if head.use_image else False)
    torch.manual_seed(cfg.run.seed)  # LoRA's A matrices are drawn from torch's global RNG
    peft_model = attach_lora(base, cfg.answer)
    fraction = trainable_fraction(peft_model)
    out_dir = paths.answer_dir(head.name, head.fmt)
    result = train_seq2seq(peft_model, tokenizer, data, features, cfg.answer.train, out_dir,
                           model_dir=out_dir / "adapter", seed=cfg.run.seed, mixed_precision=cfg.run.mixed_precision,
                           # the model under the adapter: a new ARES model must never resume an old head
                           fingerprint_extra={"base_model": dir_signature(head.model_dir), "use_image": head.use_image},
                           gradient_checkpointing=cfg.model.gradient_checkpointing, desc=f"LoRA {head.label}",
                           progress=False,  # one line per head (evaluate_head), not per step
                           tracking=run.tracking(f"{STAGE}/{head.name}/{head.fmt}",
                                                 {"train": vars(cfg.answer.train), "use_image": head.use_image}))
    trained = {"train": result.summary(), "trainable": fraction, "train_s": time.time() - t0,
               "train_cpu_s": time.process_time() - cpu0}  # this process's (the main one's)
    return trained, result.processes


def evaluate_head(cfg: Config, paths: RunPaths, head: Head, data: dict, trained: dict) -> dict:
    """Reload the saved adapter (as PeftModel.from_pretrained loads it), answer the test split,
    write ``predictions_test.jsonl`` and ``head_summary.json``; returns the head's summary."""
    t0, cpu0 = time.time(), time.process_time()
    out_dir = paths.answer_dir(head.name, head.fmt)
    tokenizer = load_tokenizer(head.model_dir)
    model = load_answer_model(head.model_dir, out_dir / "adapter", use_image=None if head.use_image else False)
    model.to(default_device())
    rationales = test_rationales(paths, head.rationale_name, data["test"]) if head.fmt == "QCMG-A" else None
    rows = predict_answers(
        model, tokenizer, data["test"], data["features"]["test"] if head.use_image else None, head.fmt,
        rationales=rationales, use_caption=cfg.data.use_caption, max_new_tokens=cfg.answer.max_new_tokens,
        batch_size=cfg.baseline.gen_batch_size, max_source_length=_answer_source_length(cfg, head.fmt),
        seed=cfg.run.seed, mixed_precision=cfg.run.mixed_precision,
    )
    write_jsonl(paths.predictions_file(head.name, head.fmt), rows)
    eval_s = time.time() - t0
    summary = {
        "model": head.name, "format": head.fmt, "use_image": head.use_image,
        "accuracy": accuracy_by_category(rows),
        "extraction_failures": sum(not r["extracted"] for r in rows),
        "n_test": len(rows),
        "trainable": trained["trainable"],
        "train": trained["train"],
        "time_s": {"train": trained["train_s"], "eval": eval_s, "total": trained["train_s"] + eval_s,
                   "train_cpu": trained["train_cpu_s"], "eval_cpu": time.process_time() - cpu0},
    }
    write_json(out_dir / "head_summary.json", summary)
    say(f"LoRA answer head {head.name} {head.fmt}{'' if head.use_image else ' (image features zeroed)'}: "
        f"{trained['train']['steps']} steps, "
        f"test accuracy {summary['accuracy']['Avg']:.1f}%")
    return summary


def run(cfg: Config, paths: RunPaths, round_index: int | None = None) -> dict:
    """Train every head (the heavy step), evaluate each on test, the image ablation, the accuracy table."""
    return drive(cfg, paths, STAGE, _train_and_answer, heavy=heavy_step)


def _train_and_answer(run: StageRun) -> dict:
    cfg, paths = run.cfg, run.paths
    data = {"test": run.problems()["test"].to_list(), "features": {"test": run.features("test")}}
    plan = plan_heads(cfg, paths)
    trained = run.heavy()
    done = {head.label: evaluate_head(cfg, paths, head, data, trained["heads"][head.label]) for head in plan}
    models = dict.fromkeys(h.name for h in plan if h.name != NO_IMAGE)  # in the order evaluated_models gives
    heads = {name: {fmt: done[f"{name}/{fmt}"] for fmt in cfg.answer.formats} for name in models}

    ablation = None
    if cfg.answer.image_ablation:
        with_image, without = done[f"{BASELINE_MODEL}/QCM-A"], done[f"{NO_IMAGE}/QCM-A"]
        ablation = {
            "format": "QCM-A", "model": BASELINE_MODEL,
            "accuracy_with_image": with_image["accuracy"]["Avg"],
            "accuracy_without_image": without["accuracy"]["Avg"],
            "by_category": {"with_image": with_image["accuracy"], "without_image": without["accuracy"]},
            "extraction_failures_without_image": without["extraction_failures"],
        }

    accuracy = {m: {f: h["accuracy"] for f, h in by_fmt.items()} for m, by_fmt in heads.items()}
    table = write_table(heads_table(accuracy), paths.tables_dir, "accuracy_by_category",
                        "Answer accuracy (%) by category of every LoRA head", 2, formats=("csv", "md"))
    return {
        "stage": STAGE,
        "processes": trained["processes"],
        "metric": dataset_registry.dataset(cfg.data).metric,
        "accuracy": accuracy,
        "n_test": len(data["test"]),
        "extraction_failures": {m: {f: h["extraction_failures"] for f, h in by_fmt.items()} for m, by_fmt in heads.items()},
        "trainable_fraction": next((h["trainable"]["fraction"] for f in heads.values() for h in f.values()), None),
        "trainable_parameters": {m: {f: h["trainable"] for f, h in by_fmt.items()} for m, by_fmt in heads.items()},
        "lora": {"r": cfg.answer.r, "alpha": cfg.answer.alpha, "dropout": cfg.answer.dropout,
                 "target_modules": cfg.answer.target_modules},
        "train": {m: {f: h["train"] for f, h in by_fmt.items()} for m, by_fmt in heads.items()},
        "head_time_s": {label: h["time_s"] for label, h in done.items()},  # every head, the ablation's too
        "image_ablation": ablation,
        "tables": list(table.values()),
    }


@dataclass(frozen=True)
class AnswerLoRAResult:
    """Stage 06 finished: what notebook 06 shows."""

    summary: dict
    table: pd.DataFrame  # accuracy (%) by category, one row per (model, format) head
    curves: dict[str, list[dict]]  # "<model> <format>": the head's training metrics rows


def load(cfg: Config, paths: RunPaths, round_index: int | None = None) -> AnswerLoRAResult:
    """The finished stage: summary, the accuracy table, each head's training curve."""
    summary = read_json(paths.summary_file(STAGE))
    curves = {f"{m} {f}": read_jsonl(paths.answer_dir(m, f) / "metrics.jsonl")
              for m, by_fmt in summary["accuracy"].items() for f in by_fmt}
    return AnswerLoRAResult(summary=summary, table=heads_table(summary["accuracy"]).set_index(["model", "format"]),
                            curves=curves)
