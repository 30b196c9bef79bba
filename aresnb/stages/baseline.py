"""Stage 02: the MM-CoT baseline, SFT of the rationale model on QCM-E; its greedy rationales.

With ``baseline.train: false`` nothing trains: the initial model (``model.init_from``, MM-CoT's
released rationale model, where ARES starts) is saved as the baseline as it is and evaluated the
same way. The training is the heavy step (``run.num_processes`` > 1: under ``accelerate launch``,
:mod:`aresnb.stages.launch`); the kernel then reads the model back and writes its rationales.
Writes ``02_baseline/model/`` (model + tokenizer, save_pretrained), ``checkpoints/``,
``metrics.jsonl``, ``rationales_{val,test}.jsonl`` ({"qid", "rationale"}) and ``summary.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from aresnb.config import Config
from aresnb.io import read_json, read_jsonl, write_jsonl
from aresnb.model.distributed import default_device
from aresnb.model.generation import generate_rationales
from aresnb.model.multimodal_t5 import describe_model, load_rationale_model
from aresnb.model.start import build_rationale_model
from aresnb.model.tokenizer import build_or_load_tokenizer, load_tokenizer
from aresnb.paths import BASELINE, BASELINE_MODEL, RunPaths
from aresnb.progress import say
from aresnb.sft.examples import make_examples
from aresnb.sft.trainer import evaluate_seq2seq, train_seq2seq
from aresnb.stages.driver import StageRun, drive, stage_run

STAGE = BASELINE
RATIONALE_SPLITS = ("val", "test")


def tokenizer_corpus(problems: list[dict], use_caption: bool) -> list[str]:
    """What a locally trained tokenizer learns from: every train prompt and target we will feed it."""
    texts = []
    for fmt in ("QCM-E", "QCM-A"):
        texts += [e["source"] + "\n" + e["target"] for e in make_examples(problems, fmt, use_caption=use_caption)]
    return texts


def heavy_step(run: StageRun) -> dict:
    """Train the baseline on QCM-E (every launched process; the main one saves the model)."""
    cfg, paths = run.cfg, run.paths
    train = run.problems()["train"].to_list()
    features = run.features("train")
    tokenizer = load_tokenizer(paths.baseline_model_dir)  # run() built it before any process started
    model = build_rationale_model(cfg, tokenizer, features.shape[1:])
    examples = make_examples(train, "QCM-E", use_caption=cfg.data.use_caption)
    result = train_seq2seq(
        model, tokenizer, examples, features, cfg.baseline, paths.stage_dir(STAGE),
        model_dir=paths.baseline_model_dir,
        max_source_length=cfg.model.max_source_length, max_target_length=cfg.model.max_target_length,
        seed=cfg.run.seed, mixed_precision=cfg.run.mixed_precision,
        gradient_checkpointing=cfg.model.gradient_checkpointing, desc="baseline SFT (QCM-E)",
        tracking=run.tracking(STAGE, {"train": vars(cfg.baseline), "model": vars(cfg.model)}),
    )
    return {**result.summary(), "examples": len(examples), "trained": True}


def save_initial_model(cfg: Config, paths: RunPaths, tokenizer: Any, feature_shape: tuple[int, ...]) -> dict:
    """``baseline.train: false``: the initial model saved as the baseline, untrained (in the kernel:
    nothing to launch). Its training summary says so."""
    model = build_rationale_model(cfg, tokenizer, feature_shape)
    model.save_pretrained(paths.baseline_model_dir)
    tokenizer.save_pretrained(paths.baseline_model_dir)
    return {"trained": False, "init_from": cfg.model.init_from or cfg.model.base, "steps": 0, "total_steps": 0,
            "first_loss": None, "last_loss": None, "processes": 1, "examples": 0}


def run(cfg: Config, paths: RunPaths, round_index: int | None = None) -> dict:
    """Train the baseline, write its rationales for val and test; returns the summary."""
    return drive(cfg, paths, STAGE, _train_and_generate, heavy=heavy_step)


def _train_and_generate(run: StageRun) -> dict:
    cfg, paths = run.cfg, run.paths
    ds = run.problems()
    features = {split: run.features(split) for split in ("train", *RATIONALE_SPLITS)}
    train = ds["train"].to_list()
    use_caption = cfg.data.use_caption

    tokenizer = build_or_load_tokenizer(cfg, tokenizer_corpus(train, use_caption), paths.baseline_model_dir)
    examples = make_examples(train, "QCM-E", use_caption=use_caption)
    lengths = {"source": _token_lengths(tokenizer, [e["source"] for e in examples]),
               "target": _token_lengths(tokenizer, [e["target"] for e in examples])}
    if cfg.baseline.train:
        trained = run.heavy()
    else:
        trained = save_initial_model(cfg, paths, tokenizer, features["train"].shape[1:])
    model = load_rationale_model(paths.baseline_model_dir).to(default_device())
    model.eval()

    val_examples = make_examples(ds["val"].to_list(), "QCM-E", use_caption=use_caption)
    val_metrics = evaluate_seq2seq(model, tokenizer, val_examples, features["val"], batch_size=cfg.baseline.gen_batch_size,
                                   max_source_length=cfg.model.max_source_length, max_target_length=cfg.model.max_target_length)

    t_gen = time.time()
    rationales = {}
    for split in RATIONALE_SPLITS:
        rows = generate_rationales(
            model, tokenizer, ds[split].to_list(), features[split],
            max_new_tokens=cfg.baseline.gen_max_new_tokens, batch_size=cfg.baseline.gen_batch_size,
            max_source_length=cfg.model.max_source_length, seed=cfg.run.seed, use_caption=use_caption,
            mixed_precision=cfg.run.mixed_precision,
        )
        rationales[split] = [{"qid": r["qid"], "rationale": r["rationale"]} for r in rows]
        write_jsonl(paths.rationales_file(BASELINE_MODEL, split), rationales[split])
    gen_time = time.time() - t_gen

    summary = {
        "stage": STAGE,
        "processes": trained["processes"],
        "train": trained,
        "val": {"teacher_forced_loss": val_metrics["loss"], "token_accuracy": val_metrics["token_accuracy"],
                "tokens": val_metrics["tokens"]},
        "model": describe_model(model),
        "tokenizer": {"source": cfg.model.tokenizer, "vocab_size": len(tokenizer)},
        "token_lengths": {k: {"mean": float(np.mean(v)), "max": int(np.max(v)),
                              "truncated": int(sum(x > getattr(cfg.model, f"max_{k}_length") for x in v))}
                          for k, v in lengths.items()},
        "rationales": {split: {"n": len(rows), "mean_words": float(np.mean([len(r["rationale"].split()) for r in rows])),
                               "empty": sum(not r["rationale"] for r in rows)} for split, rows in rationales.items()},
        "generation_time_s": gen_time,
        "model_dir": str(paths.baseline_model_dir),
    }
    how = (f"loss {_fmt(trained['first_loss'])} → {_fmt(trained['last_loss'])}" if trained["trained"]
           else f"loaded from {trained['init_from']}, not trained (baseline.train: false)")
    say(f"baseline: {summary['model']['parameters'] / 1e6:.1f} M parameters, {how}; "
        f"val token accuracy {val_metrics['token_accuracy']:.1%}")
    return summary


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


@dataclass(frozen=True)
class BaselineResult:
    """Stage 02 finished: what notebook 02 shows."""

    summary: dict
    metrics: list[dict]  # the trainer's metrics rows (metrics.jsonl)
    examples: list[dict]  # the first test problems: qid, question, gold and generated rationale


def load(cfg: Config, paths: RunPaths, round_index: int | None = None, n_examples: int = 4) -> BaselineResult:
    """The finished stage: summary, training metrics, the first test problems' gold and greedy rationales."""
    test = stage_run(cfg, paths, STAGE).problems()["test"].to_list()[:n_examples]
    generated = {r["qid"]: r["rationale"] for r in read_jsonl(paths.rationales_file(BASELINE_MODEL, "test"))}
    return BaselineResult(
        summary=read_json(paths.summary_file(STAGE)),
        metrics=read_jsonl(paths.metrics_file(STAGE)),
        examples=[{"qid": p["qid"], "question": p["question"], "gold": p["solution"],
                   "generated": generated.get(p["qid"])} for p in test],
    )


def _token_lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts)["input_ids"]]
