"""Stage 06: answer inference with a LoRA adapter on the rationale model (ARES, paper Figure 4).

For every model the run has (the baseline; ARES once its last round exists) and every input
format (QCM-A; QCMG-A with the model's own greedy rationale in the input), a peft LoRA adapter
is trained on the train split to write "The answer is (X).", saved in peft's format, reloaded
with ``PeftModel.from_pretrained`` and evaluated on test: regex extraction with a seeded random
fallback (failures counted), accuracy by ScienceQA category. The image ablation trains the same
QCM-A head on the baseline with the image features zeroed.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aresnb.generation import generate_rationales, generate_texts
from aresnb.models import load_rationale_model, model_dir_has_weights
from aresnb.paths import RunPaths, read_jsonl, write_json, write_jsonl, write_summary
from aresnb.sft import make_examples, train_seq2seq
from aresnb.tokenizer import load_tokenizer

CATEGORY_COLUMNS = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")
TABLE_COLUMNS = (*CATEGORY_COLUMNS, "Avg")
NO_IMAGE = "baseline_no_image"  # the ablation's folder under 06_answer_lora/


# ---- accuracy ----------------------------------------------------------------------------------


def accuracy_by_category(rows: list[dict]) -> dict[str, float | None]:
    """Accuracy in percent per column (NAT SOC LAN TXT IMG NO G1-6 G7-12 Avg); None if a column is empty.

    Each row needs ``correct`` (bool) and ``categories`` (the columns its problem counts in).
    """
    out: dict[str, float | None] = {}
    for col in CATEGORY_COLUMNS:
        hits = [bool(r["correct"]) for r in rows if col in r["categories"]]
        out[col] = 100.0 * sum(hits) / len(hits) if hits else None
    out["Avg"] = 100.0 * sum(bool(r["correct"]) for r in rows) / len(rows) if rows else None
    return out


def accuracy_table(accuracy: dict[str, dict[str, dict[str, float | None]]]) -> list[dict]:
    """{model: {format: {col: acc}}} -> rows (model, format, columns...); empty columns dropped."""
    cols = [c for c in TABLE_COLUMNS if any(v.get(c) is not None for f in accuracy.values() for v in f.values())]
    return [{"model": m, "format": fmt, **{c: acc.get(c) for c in cols}} for m, by_fmt in accuracy.items() for fmt, acc in by_fmt.items()]


def write_table(rows: list[dict], stem: Path) -> list[Path]:
    """``stem``.csv and ``stem``.md (accuracies with two decimals; '-' for an empty cell)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    stem.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(stem.with_suffix(".csv"), index=False, float_format="%.2f")
    header = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" if c in ("model", "format") else "---:" for c in df.columns) + "|"
    lines = [header, rule]
    for _, r in df.iterrows():
        cells = [str(r[c]) if c in ("model", "format") else ("-" if r[c] is None or r[c] != r[c] else f"{r[c]:.2f}") for c in df.columns]
        lines.append("| " + " | ".join(cells) + " |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return [stem.with_suffix(".csv"), stem.with_suffix(".md")]


# ---- LoRA --------------------------------------------------------------------------------------


def lora_target_modules(model: nn.Module, spec: str | list[str]) -> list[str]:
    """'all-linear' -> the names of every nn.Linear except the LM head (paper: "every Linear").

    The out_proj inside nn.MultiheadAttention is left out: MultiheadAttention reads its weight
    directly, so a LoRA there would be dead weight (peft would have to re-merge it each call).
    """
    if spec != "all-linear":
        return list(spec) if not isinstance(spec, str) else [spec]
    inside_mha = {f"{name}.{child}" for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)
                  for child, _ in m.named_children()}
    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and name != "lm_head" and name not in inside_mha}
    excluded = {n.rsplit(".", 1)[-1] for n in inside_mha} | {"lm_head"}
    clash = leaves & excluded
    if clash:
        raise ValueError(f"LoRA target names {sorted(clash)} would also match excluded layers; list answer.target_modules explicitly")
    return sorted(leaves)


def attach_lora(model: nn.Module, answer_cfg: Any) -> Any:
    """Wrap ``model`` in a peft LoRA model with the configured r, alpha, dropout and targets."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        r=answer_cfg.r,
        lora_alpha=answer_cfg.alpha,
        lora_dropout=answer_cfg.dropout,
        target_modules=lora_target_modules(model, answer_cfg.target_modules),
        task_type=TaskType.SEQ_2_SEQ_LM,
    )
    return get_peft_model(model, config)


def trainable_fraction(peft_model: nn.Module) -> dict:
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    return {"trainable": trainable, "total": total, "fraction": trainable / total}


def load_answer_model(base_dir: str | Path, adapter_dir: str | Path, use_image: bool | None = None) -> Any:
    """The rationale model at ``base_dir`` with the saved adapter, as PeftModel.from_pretrained loads it."""
    from peft import PeftModel

    base = load_rationale_model(base_dir, use_image=use_image)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()
    return model


# ---- predictions -------------------------------------------------------------------------------


def predict_answers(
    model: Any,
    tokenizer: Any,
    problems: list[dict],
    features: np.ndarray | None,
    fmt: str,
    *,
    rationales: dict[str, str] | None = None,
    use_caption: bool = True,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    max_source_length: int = 192,
    seed: int = 0,
) -> list[dict]:
    """Greedy answers, extracted with the regex; a failed extraction draws a seeded random option."""
    from aresnb.data import categories
    from aresnb.data.prompts import extract_answer

    examples = make_examples(problems, fmt, rationales=rationales, use_caption=use_caption)
    texts = generate_texts(model, tokenizer, [e["source"] for e in examples], features,
                           max_new_tokens=max_new_tokens, batch_size=batch_size,
                           max_source_length=max_source_length, seed=seed, desc=f"answers {fmt}")
    rng = random.Random(seed)
    rows = []
    for p, (text,) in zip(problems, texts):
        index, ok = extract_answer(text, len(p["choices"]), rng)
        rows.append({"qid": p["qid"], "output": text, "prediction": index, "extracted": ok,
                     "answer": int(p["answer"]), "correct": index == int(p["answer"]), "categories": categories(p)})
    return rows


# ---- the stage ---------------------------------------------------------------------------------


def models_in_run(cfg: Any, paths: RunPaths) -> dict[str, tuple[Path, str]]:
    """{name: (model dir, rationale-file name)}: the baseline, and ARES once its last round exists."""
    found = {"baseline": (paths.baseline_model_dir, "baseline")}
    if not model_dir_has_weights(paths.baseline_model_dir):
        raise FileNotFoundError(f"no baseline model at {paths.baseline_model_dir}: run stage 02 first")
    ares_dir = paths.ares_model_dir(cfg.ares.rounds)
    if model_dir_has_weights(ares_dir):
        found["ares"] = (ares_dir, f"round_{cfg.ares.rounds}")
    return found


def _rationales_for(model: Any, tokenizer: Any, problems: list[dict], features: np.ndarray, files: list[Path], cfg: Any) -> dict[str, str]:
    """The model's greedy rationales for ``problems``: from the first complete file, else generated into the last."""
    for file in files:
        have = {r["qid"]: r["rationale"] for r in read_jsonl(file)}
        if have and all(p["qid"] in have for p in problems):
            return have
    rows = generate_rationales(model, tokenizer, problems, features, max_new_tokens=cfg.baseline.gen_max_new_tokens,
                               batch_size=cfg.baseline.gen_batch_size, max_source_length=cfg.model.max_source_length,
                               seed=cfg.run.seed, use_caption=cfg.data.use_caption)
    write_jsonl(files[-1], [{"qid": r["qid"], "rationale": r["rationale"]} for r in rows])
    return {r["qid"]: r["rationale"] for r in rows}


def train_answer_head(
    cfg: Any,
    paths: RunPaths,
    name: str,
    model_dir: Path,
    fmt: str,
    data: dict,
    rationales: dict[str, dict[str, str]] | None = None,
    use_image: bool = True,
) -> dict:
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
        desc=f"LoRA {name} {fmt}",
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
    return {**summary, "metrics": result.metrics}


def _answer_source_length(cfg: Any, fmt: str) -> int:
    # QCMG-A carries the rationale in its input: room for the question part and the rationale.
    return cfg.model.max_source_length + (cfg.baseline.gen_max_new_tokens if fmt == "QCMG-A" else 0)


def run_answer_stage(cfg: Any, paths: RunPaths) -> dict:
    """Every (model, format) head, the image ablation, accuracy tables; returns summary + curves."""
    from aresnb.data import load_features, load_problems

    t0 = time.time()
    stage_dir = paths.stage_dir("06_answer_lora")
    ds = load_problems(paths)
    data = {"train": ds["train"].to_list(), "test": ds["test"].to_list(),
            "features": {s: load_features(paths, s) for s in ("train", "test")}}
    heads: dict[str, dict[str, dict]] = {}
    for name, (model_dir, rationale_name) in models_in_run(cfg, paths).items():
        heads[name] = {}
        for fmt in cfg.answer.formats:
            rationales = None
            if fmt == "QCMG-A":
                rationales = _model_rationales(cfg, paths, name, model_dir, rationale_name, data)
            heads[name][fmt] = train_answer_head(cfg, paths, name, model_dir, fmt, data, rationales)

    ablation = None
    if cfg.answer.image_ablation:
        with_image = heads["baseline"].get("QCM-A") or train_answer_head(cfg, paths, "baseline", paths.baseline_model_dir, "QCM-A", data)
        without = train_answer_head(cfg, paths, NO_IMAGE, paths.baseline_model_dir, "QCM-A", data, use_image=False)
        ablation = {
            "format": "QCM-A", "model": "baseline",
            "accuracy_with_image": with_image["accuracy"]["Avg"],
            "accuracy_without_image": without["accuracy"]["Avg"],
            "by_category": {"with_image": with_image["accuracy"], "without_image": without["accuracy"]},
            "extraction_failures_without_image": without["extraction_failures"],
        }

    accuracy = {m: {f: h["accuracy"] for f, h in by_fmt.items()} for m, by_fmt in heads.items()}
    tables = write_table(accuracy_table(accuracy), paths.tables_dir / "accuracy_by_category")
    summary = {
        "stage": "06_answer_lora",
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
        "tables": tables,
    }
    write_summary(stage_dir, summary)
    curves = {f"{m} {f}": h["metrics"] for m, by_fmt in heads.items() for f, h in by_fmt.items()}
    return {"summary": summary, "curves": curves, "table": accuracy_table(accuracy)}


def _model_rationales(cfg: Any, paths: RunPaths, name: str, model_dir: Path, rationale_name: str, data: dict) -> dict[str, dict[str, str]]:
    """QCMG-A inputs: the model's own greedy rationales for train (generated here) and test.

    Test rationales come from the file the model's stage wrote (02 or 05) when it is complete.
    """
    tokenizer = load_tokenizer(model_dir)
    model = load_rationale_model(model_dir)
    out_dir = paths.answer_dir(name, "QCMG-A")
    feats = data["features"]
    return {
        "train": _rationales_for(model, tokenizer, data["train"], feats["train"], [out_dir / "rationales_train.jsonl"], cfg),
        "test": _rationales_for(model, tokenizer, data["test"], feats["test"],
                                [paths.rationales_file(rationale_name, "test"), out_dir / "rationales_test.jsonl"], cfg),
    }
