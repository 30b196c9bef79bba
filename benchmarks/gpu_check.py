"""GPU check: the paper's Base and Large shapes on the best device here, and one ARES round projected.

    .venv/bin/python benchmarks/gpu_check.py [--tiny] [--out PATH] [--models base,large]

Builds the multimodal rationale model at the shapes of Flan-Alpaca Base and Large
(``benchmarks/configs/flan_alpaca_{base,large}.json``: T5 v1.1, random weights, nothing is
downloaded) with ViT-L/32 image features (145, 1024), takes the recipe of
``params/scienceqa_{base,large}.yaml`` (the paper's), and measures on the best device present,
through the project's own code, Teacher-free:

- ``sft``: optimizer steps of the supervised trainer (``aresnb.sft.train_step``) at the paper
  batch (8) with ScienceQA-sized QCM-E sources and targets; ``sft_max_length`` one step at the
  512/512 limits (does the worst batch fit?);
- ``sampling``: ``aresnb.generation.sample_responses``, k = 4 samples of 512 new tokens for each
  prompt of one generation batch (32 prompts); every sample is held to the full 512 tokens, so
  this is the upper bound of a batch; ``greedy`` and ``answers`` the same for greedy rationales
  (512 tokens) and answers (16 tokens);
- ``ppo``: ``aresnb.ppo.train_ppo`` with the separate critic on a synthetic buffer (k = 4 per
  prompt, response lengths drawn from ScienceQA's solution lengths), optimizer steps of 256
  sequences with the paper's micro-batch;
- ``lora_qcm_a``, ``lora_qcmg_a``: LoRA answer-head steps (r 64, every Linear) at batch 16.

Each gives its throughput, the peak device memory and whether it fit (an out-of-memory error is
caught and recorded; a Large step that does not fit is retried with gradient checkpointing).
Then the projected wall time of one full ARES round on ScienceQA (12,726 train problems; the
paper's epochs) on this device, stage by stage. On one H100-class GPU the whole check should
take a few minutes (about 30 timed steps and 8 generation batches for each model).

``--tiny`` runs the same code at tiny shapes on the CPU in well under a minute (a test runs it);
its numbers say nothing about a GPU. Without a GPU (and without ``--tiny``) the check refuses.
JSON: ``benchmarks/results/gpu_check_<device>.json`` unless ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_measure import (PAPER, ROOT, TINY, best_device, device_info, guarded, measurements, model_config,  # noqa: E402
                         word_tokenizer)

from aresnb.config import load_config  # noqa: E402
from aresnb.models import MultimodalT5ForConditionalGeneration  # noqa: E402

SCIENCEQA = {"train": 12726, "val": 4241, "test": 4241}


# ---- a model's check and the projection --------------------------------------------------------


def project_round(m: dict, recipe: Any, prompts: int) -> dict:
    """Hours of one ARES round on ScienceQA with the paper's epochs, stage by stage (Teacher calls,
    stage 01's features and stage 07 left out); None where a measurement did not fit."""
    train, val, test = SCIENCEQA["train"], SCIENCEQA["val"], SCIENCEQA["test"]
    k, heads = recipe.rollout.samples_per_problem, 2 * len(recipe.answer.formats)  # baseline and ARES
    batches = lambda n: math.ceil(n / prompts)  # noqa: E731
    sft_steps = lambda cfg: math.ceil(cfg.epochs * math.ceil(train / cfg.batch_size))  # noqa: E731
    lora_steps, buffer = sft_steps(recipe.answer.train) * heads // 2, k * train
    ppo_steps = recipe.ppo.ppo_epochs * math.ceil(buffer / m.get("ppo", {}).get("sequences_per_step", 1))

    def stage(*parts: tuple[str, str, str, float]) -> dict:
        out = {}
        for part, label, key, count in parts:
            got = m.get(label, {})
            each = got[key] if got.get("fit") else None
            out[part] = {"count": count, "seconds_each": each, "hours": None if each is None else each * count / 3600}
        hours = [p["hours"] for p in out.values()]
        return {"hours": None if None in hours else sum(hours), "parts": out}

    stages = {
        "02_baseline": stage(("SFT steps", "sft", "step_s", sft_steps(recipe.baseline)),
                             ("greedy batches (val, test)", "greedy", "batch_s", batches(val) + batches(test))),
        "03_teacher_scores": stage(("sampling batches (k samples a prompt)", "sampling", "batch_s", batches(train))),
        "04_ppo": stage(("rollout statistics (sequences)", "ppo", "rollout_statistics_s_per_sequence", buffer),
                        ("PPO optimizer steps", "ppo", "step_s", ppo_steps),
                        ("greedy batches (val before and after)", "greedy", "batch_s", 2 * batches(val))),
        "05_correction_sft": stage(("greedy batches (train, val and test twice)", "greedy", "batch_s",
                                    batches(train) + 2 * (batches(val) + batches(test))),
                                   ("SFT steps", "sft", "step_s", sft_steps(recipe.correction.sft))),
        "06_answer_lora": stage(("LoRA QCM-A steps", "lora_qcm_a", "step_s", lora_steps),
                                ("LoRA QCMG-A steps", "lora_qcmg_a", "step_s", lora_steps),
                                ("answer batches (test, every head)", "answers", "batch_s", heads * batches(test))),
    }
    known = [s["hours"] for s in stages.values()]
    return {"stages": stages, "total_hours": None if None in known else sum(known),
            "assumptions": {"scienceqa": SCIENCEQA, "ppo_passes": recipe.ppo.ppo_epochs, "ppo_buffer": buffer,
                            "baseline_epochs": recipe.baseline.epochs, "correction_epochs": recipe.correction.sft.epochs,
                            "lora_epochs": recipe.answer.train.epochs, "lora_heads": heads, "generation_batch": prompts,
                            "generation": "every batch runs to max_new_tokens (an upper bound); one device, one process",
                            "left_out": "Teacher calls, ViT features (stage 01), the judge (stage 07)"}}


def check_model(name: str, shape: dict, device: torch.device, precision: str, log: Callable[[str], None]) -> dict:
    config = model_config(name, shape)
    recipe = load_config(ROOT / "params" / f"scienceqa_{name}.yaml")
    ctx = {"shape": shape, "device": device, "precision": precision, "config": config, "recipe": recipe,
           "tokenizer": word_tokenizer(config.vocab_size)}
    with torch.device("meta"):
        parameters = sum(p.numel() for p in MultimodalT5ForConditionalGeneration(config).parameters())
    results = {}
    for label, fn in measurements(ctx).items():
        results[label] = guarded(fn, device, checkpointing_fallback=name == "large")
        log(f"{name} {label}: {json.dumps(results[label])}")
    prompts = shape.get("batches", {}).get("generation", recipe.rollout.batch_size)
    return {"parameters": parameters, "shape": {k: getattr(config, k) for k in ("d_model", "d_ff", "num_layers", "num_heads", "vocab_size")},
            "image_features": list(shape["features"]), "measurements": results,
            "projection": project_round(results, recipe, prompts)}


def device_slug(info: dict, tiny: bool) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", (info["name"] if info["kind"] == "cuda" else "cpu").lower()).strip("-")
    return slug + ("-tiny" if tiny else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU: the code path, not a measurement")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_check_<device>.json)")
    ap.add_argument("--models", default="base,large", help="comma-separated: base, large")
    ap.add_argument("--precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                    help="auto: bf16 on a GPU that has it, else no")
    args = ap.parse_args(argv)
    device = torch.device("cpu") if args.tiny else best_device()
    if device.type != "cuda" and not args.tiny:
        print("gpu_check: no GPU here; the full check needs one (--tiny runs the code path on the CPU)", file=sys.stderr)
        return 2
    precision = args.precision if args.precision != "auto" else \
        ("bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no")
    info = device_info(device, precision)
    started = time.time()
    report = {"benchmark": "gpu_check", "tiny": args.tiny, "device": info, "models": {},
              "note": "random weights; transformers 5 ties T5's LM head to the embeddings, so the counts are "
                      "below the paper's 251M / 790M by one vocabulary matrix (the compute is the same)"}
    for name in args.models.split(","):
        report["models"][name] = check_model(name, TINY if args.tiny else PAPER, device, precision, print)
    report["wall_time_s"] = round(time.time() - started, 1)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"gpu_check_{device_slug(info, args.tiny)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_check: {out} ({report['wall_time_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
