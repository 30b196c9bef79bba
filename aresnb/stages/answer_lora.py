"""Stage 06: answer inference with a LoRA adapter on the rationale model (ARES, paper Figure 4).

For every model the run has (the baseline; ARES once its last round exists) and every input
format, a peft LoRA adapter is trained on the train split to write "The answer is (X).", saved in
peft's format, reloaded with ``PeftModel.from_pretrained`` and evaluated on test: regex extraction
with a seeded random fallback (failures counted), accuracy by ScienceQA category.

- QCM-A: question, context, options.
- QCMG-A, as MM-CoT does it: the head trains with the GOLD rationale (lecture + solution) in its
  input and is tested with the model's own greedy test rationale (written by stage 02 or 05), so
  the accuracy measures how well the model's rationales lead to the answer.

The image ablation trains the same QCM-A head on the baseline with the image features zeroed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from aresnb.answer import attach_lora, load_answer_model, predict_answers, trainable_fraction
from aresnb.evaluation.accuracy import accuracy_by_category, heads_table
from aresnb.evaluation.tables import write_table
from aresnb.io import read_json, read_jsonl, write_json, write_jsonl
from aresnb.models import load_rationale_model, model_dir_has_weights
from aresnb.paths import ANSWER_LORA, BASELINE_MODEL, RunPaths, round_model
from aresnb.progress import say
from aresnb.sft import make_examples, train_seq2seq
from aresnb.stages import stored_summary, tracking
from aresnb.stages.data import load_features, load_problems
from aresnb.tokenizer import load_tokenizer

STAGE = ANSWER_LORA
NO_IMAGE = "baseline_no_image"  # the ablation's folder under 06_answer_lora/


def models_in_run(cfg: Any, paths: RunPaths) -> dict[str, tuple[Path, str]]:
    """{name: (model dir, rationale-file name)}: the baseline, and ARES once its last round exists."""
    found = {BASELINE_MODEL: (paths.baseline_model_dir, BASELINE_MODEL)}
    if not model_dir_has_weights(paths.baseline_model_dir):
        raise FileNotFoundError(f"no baseline model at {paths.baseline_model_dir}: run stage 02 first")
    ares_dir = paths.ares_model_dir(cfg.ares.rounds)
    if model_dir_has_weights(ares_dir):
        found["ares"] = (ares_dir, round_model(cfg.ares.rounds))
    return found


def gold_rationales(problems: list[dict]) -> dict[str, str]:
    """What QCMG-A trains on, as MM-CoT: the gold lecture and solution."""
    return {p["qid"]: " ".join(x for x in (p.get("lecture", ""), p.get("solution", "")) if x) for p in problems}


def test_rationales(paths: RunPaths, rationale_name: str, problems: list[dict]) -> dict[str, str]:
    """The model's own greedy test rationales, as its stage (02 or 05) wrote them."""
    file = paths.rationales_file(rationale_name, "test")
    have = {r["qid"]: r["rationale"] for r in read_jsonl(file)}
    missing = [p["qid"] for p in problems if p["qid"] not in have]
    if missing:
        raise FileNotFoundError(f"{file}: no greedy rationale for {len(missing)} test problem(s), e.g. {missing[:3]}; "
                                "run the stage that writes it (02 or 05) first")
    return have


def _answer_source_length(cfg: Any, fmt: str) -> int:
    # QCMG-A carries a rationale in its input (gold: lecture + solution): room for both.
    return cfg.model.max_source_length + (2 * cfg.model.max_target_length if fmt == "QCMG-A" else 0)


def train_answer_head(cfg: Any, paths: RunPaths, name: str, model_dir: Path, fmt: str, data: dict,
                      rationales: dict[str, dict[str, str]] | None = None, use_image: bool = True) -> dict:
    """Train, save, reload and evaluate one LoRA answer head; writes ``06_answer_lora/<name>/<fmt>/``."""
    t0 = time.time()
    out_dir = paths.answer_dir(name, fmt)
    adapter_dir = out_dir / "adapter"
    tokenizer = load_tokenizer(model_dir)
    no_image = None if use_image else False  # the ablation switches the model's image path off
    base = load_rationale_model(model_dir, use_image=no_image)
    # LoRA's A matrices are drawn from torch's global RNG: seed it, or two runs differ.
    torch.manual_seed(cfg.run.seed)
    peft_model = attach_lora(base, cfg.answer)
    fraction = trainable_fraction(peft_model)
    train_rationales = rationales["train"] if rationales else None
    examples = make_examples(data["train"], fmt, rationales=train_rationales, use_caption=cfg.data.use_caption,
                             zero_features=not use_image)
    result = train_seq2seq(
        peft_model, tokenizer, examples, data["features"]["train"], cfg.answer.train, out_dir,
        model_dir=adapter_dir, max_source_length=_answer_source_length(cfg, fmt),
        max_target_length=cfg.answer.max_new_tokens, seed=cfg.run.seed, mixed_precision=cfg.run.mixed_precision,
        desc=f"LoRA {name} {fmt}", progress=False,  # one line per head (below), not per step
        tracking=tracking(cfg, paths, f"{STAGE}/{name}/{fmt}", {"train": vars(cfg.answer.train), "use_image": use_image}),
    )
    # Evaluate what was saved: the adapter as PeftModel.from_pretrained loads it.
    model = load_answer_model(model_dir, adapter_dir, use_image=no_image)
    rows = predict_answers(
        model, tokenizer, data["test"], data["features"]["test"] if use_image else None, fmt,
        rationales=rationales["test"] if rationales else None, use_caption=cfg.data.use_caption,
        max_new_tokens=cfg.answer.max_new_tokens, batch_size=cfg.baseline.gen_batch_size,
        max_source_length=_answer_source_length(cfg, fmt), seed=cfg.run.seed,
    )
    write_jsonl(out_dir / "predictions_test.jsonl", rows)
    summary = {
        "model": name, "format": fmt, "use_image": use_image,
        "accuracy": accuracy_by_category(rows),
        "extraction_failures": sum(not r["extracted"] for r in rows),
        "n_test": len(rows),
        "trainable": fraction,
        "train": result.summary(),
        "wall_time_s": time.time() - t0,
    }
    write_json(out_dir / "head_summary.json", summary)
    say(f"LoRA answer head {name} {fmt}{'' if use_image else ' (image features zeroed)'}: {result.steps} steps, "
        f"test accuracy {summary['accuracy']['Avg']:.1f}%")
    return summary


def run(cfg: Any, paths: RunPaths, round_index: int | None = None) -> dict:
    """Every (model, format) head, the image ablation, the accuracy table; returns the summary."""
    if (stored := stored_summary(cfg, paths, STAGE)) is not None:
        return stored
    t0 = time.time()
    paths.stage_dir(STAGE)
    ds = load_problems(paths)
    data = {"train": ds["train"].to_list(), "test": ds["test"].to_list(),
            "features": {s: load_features(paths, s) for s in ("train", "test")}}
    heads: dict[str, dict[str, dict]] = {}
    for name, (model_dir, rationale_name) in models_in_run(cfg, paths).items():
        heads[name] = {}
        for fmt in cfg.answer.formats:
            rationales = None
            if fmt == "QCMG-A":
                rationales = {"train": gold_rationales(data["train"]),
                              "test": test_rationales(paths, rationale_name, data["test"])}
            heads[name][fmt] = train_answer_head(cfg, paths, name, model_dir, fmt, data, rationales)

    ablation = None
    if cfg.answer.image_ablation:
        with_image = heads[BASELINE_MODEL].get("QCM-A") or train_answer_head(
            cfg, paths, BASELINE_MODEL, paths.baseline_model_dir, "QCM-A", data)
        without = train_answer_head(cfg, paths, NO_IMAGE, paths.baseline_model_dir, "QCM-A", data, use_image=False)
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
    summary = {
        "stage": STAGE,
        "wall_time_s": time.time() - t0,
        "metric": "multiple-choice accuracy (%)" if cfg.data.source == "aokvqa" else "accuracy (%) by ScienceQA category",
        "accuracy": accuracy,
        "n_test": len(data["test"]),
        "extraction_failures": {m: {f: h["extraction_failures"] for f, h in by_fmt.items()} for m, by_fmt in heads.items()},
        "trainable_fraction": next((h["trainable"]["fraction"] for f in heads.values() for h in f.values()), None),
        "trainable_parameters": {m: {f: h["trainable"] for f, h in by_fmt.items()} for m, by_fmt in heads.items()},
        "lora": {"r": cfg.answer.r, "alpha": cfg.answer.alpha, "dropout": cfg.answer.dropout,
                 "target_modules": cfg.answer.target_modules},
        "train": {m: {f: h["train"] for f, h in by_fmt.items()} for m, by_fmt in heads.items()},
        "image_ablation": ablation,
        "tables": list(table.values()),
    }
    write_json(paths.summary_file(STAGE), summary)
    return summary


def load(cfg: Any, paths: RunPaths, round_index: int | None = None) -> dict:
    """The finished stage: summary, the accuracy table, each head's training curve."""
    summary = read_json(paths.summary_file(STAGE))
    curves = {f"{m} {f}": read_jsonl(paths.answer_dir(m, f) / "metrics.jsonl")
              for m, by_fmt in summary["accuracy"].items() for f in by_fmt}
    return {"summary": summary, "table": heads_table(summary["accuracy"]).set_index(["model", "format"]),
            "curves": curves}
