"""GPU check: the paper's Base and Large shapes on the best device here, and one ARES round projected.

    .venv/bin/python benchmarks/gpu_check.py [--tiny] [--out PATH] [--models base,large] [--budget-s S]

Builds the multimodal rationale model at the shapes of Flan-Alpaca Base and Large
(``benchmarks/configs/flan_alpaca_{base,large}.json``: T5 v1.1, random weights, nothing is
downloaded) with ViT-L/32 image features (145, 1024), takes the recipe of
``params/scienceqa_{base,large}.yaml`` (the paper's), and measures on the best device present,
through the project's own code, Teacher-free:

- ``sft``: optimizer steps of the supervised trainer (``aresnb.sft.trainer.train_step``) at the paper
  batch (8) with ScienceQA-sized QCM-E sources and targets; ``sft_max_length`` one step at the
  512/512 limits (does the worst batch fit?);
- ``sampling``: ``aresnb.model.generation.sample_responses``, k = 4 samples of 512 new tokens for each
  prompt of one generation batch (32 prompts); every sample is held to the full 512 tokens, so
  this is the upper bound of a batch; ``greedy`` and ``answers`` the same for greedy rationales
  (512 tokens) and answers (16 tokens);
- ``ppo``: ``aresnb.rl.ppo.train_ppo`` with the separate critic on a synthetic buffer (k = 4 per
  prompt, response lengths drawn from ScienceQA's solution lengths), optimizer steps of 256
  sequences with the paper's micro-batch;
- ``lora_qcm_a``, ``lora_qcmg_a``: LoRA answer-head steps (r 64, every Linear) at batch 16.

Each gives its throughput, the peak device memory and whether it fit (an out-of-memory error is
caught and recorded; a Large step that does not fit is retried with gradient checkpointing).
Then the projected wall time of one full ARES round on ScienceQA (12,726 train problems; the
paper's epochs) on this device, stage by stage. On one H100-class GPU the whole check should
take a few minutes (about 30 timed steps and 8 generation batches for each model).

``--budget-s`` bounds the whole check: each measurement may use the time left divided by the
measurements left, and times as many steps (up to the shape's number) as fit in that; one that
would start with no time left is recorded as skipped. The JSON is rewritten after every
measurement, so a killed or failing run leaves what it measured; a measurement that fails with
anything but an out-of-memory error is recorded with its error, printed, and the check goes on.
Exit status: 0 complete, 1 a measurement failed, 2 refused (no GPU, a package missing: one
line says which), 3 measurements skipped for the time budget.

``--tiny`` runs the same code at tiny shapes on the CPU in well under a minute (a test runs it);
its numbers say nothing about a GPU. Without a GPU (and without ``--tiny``) the check refuses.
JSON: ``benchmarks/results/gpu_check_<device>.json`` unless ``--out``. On the GPU machine, with
no network: ``benchmarks/gpu_check_device.sh`` (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_carry import package_versions, source_digest  # noqa: E402  (standard library only)

try:
    import torch
    from gpu_measure import (MEASUREMENTS, PAPER, ROOT, TINY, best_device, device_info, guarded,  # noqa: E402
                             measurements, model_config, word_tokenizer)

    import aresnb  # noqa: E402
    from aresnb.config import load_config  # noqa: E402
    from aresnb.model.multimodal_t5 import MultimodalT5ForConditionalGeneration  # noqa: E402
except ModuleNotFoundError as e:  # a machine (the GPU one's image) without a package: say which, at once
    print(f"gpu_check: cannot start: no module {e.name!r} on Python {platform.python_version()} "
          f"(python3 benchmarks/gpu_carry.py versions lists what the check needs)", file=sys.stderr)
    sys.exit(2)

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


class Budget:
    """The check's time limit, shared out: a measurement may use the time left divided by the
    measurements left, so a fast one hands its unused share on. ``seconds`` None: no limit."""

    def __init__(self, seconds: float | None, measurements_left: int):
        self.end = None if seconds is None else time.perf_counter() + seconds
        self.left = measurements_left

    def next_deadline(self) -> float | None:
        """The perf_counter time by which the next measurement should be done (None: no limit)."""
        self.left -= 1
        if self.end is None:
            return None
        now = time.perf_counter()
        return now + (self.end - now) / (self.left + 1)

    def spent(self) -> bool:
        return self.end is not None and time.perf_counter() >= self.end


def check_model(name: str, shape: dict, device: torch.device, precision: str, budget: Budget, entry: dict,
                save: Callable[[], None], log: Callable[[str], None]) -> list[str]:
    """Fill ``entry`` with the model's measurements and projection, saving after each one; return
    the measurements that failed (each printed with its traceback)."""
    config = model_config(name, shape)
    recipe = load_config(ROOT / "params" / f"scienceqa_{name}.yaml")
    ctx = {"shape": shape, "device": device, "precision": precision, "config": config, "recipe": recipe,
           "tokenizer": word_tokenizer(config.vocab_size)}
    with torch.device("meta"):
        parameters = sum(p.numel() for p in MultimodalT5ForConditionalGeneration(config).parameters())
    prompts = shape.get("batches", {}).get("generation", recipe.rollout.batch_size)
    results: dict[str, dict] = {}
    entry.update(parameters=parameters, image_features=list(shape["features"]), measurements=results,
                 shape={k: getattr(config, k) for k in ("d_model", "d_ff", "num_layers", "num_heads", "vocab_size")})
    failed = []
    for label, fn in measurements(ctx).items():
        ctx["deadline"] = budget.next_deadline()
        if budget.spent():
            results[label] = {"fit": None, "skipped": "the time budget (--budget-s) was spent"}
        else:
            try:
                results[label] = guarded(fn, device, checkpointing_fallback=name == "large")
            except Exception as e:  # noqa: BLE001 - recorded and printed; the other measurements still run
                traceback.print_exc()
                results[label] = {"fit": None, "error": error_text(e)}
                failed.append(f"{name} {label}")
                log(f"gpu_check: FAILED at {name} {label}: {error_text(e).splitlines()[0]}")
        log(f"{name} {label}: {json.dumps(results[label])}")
        entry["projection"] = project_round(results, recipe, prompts)
        save()
    return failed


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:500]


def device_slug(info: dict, tiny: bool) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", (info["name"] if info["kind"] == "cuda" else "cpu").lower()).strip("-")
    return slug + ("-tiny" if tiny else "")


def write_report(out: Path, report: dict) -> None:
    """Whole or not at all: a kill while writing leaves the previous version."""
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU: the code path, not a measurement")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_check_<device>.json)")
    ap.add_argument("--models", default="base,large", help="comma-separated: base, large")
    ap.add_argument("--precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                    help="auto: bf16 on a GPU that has it, else no")
    ap.add_argument("--budget-s", type=float, default=None, help="seconds for the whole check (default: no limit)")
    args = ap.parse_args(argv)
    device = torch.device("cpu") if args.tiny else best_device()
    if device.type != "cuda" and not args.tiny:
        print("gpu_check: no GPU here; the full check needs one (--tiny runs the code path on the CPU)", file=sys.stderr)
        return 2
    precision = args.precision if args.precision != "auto" else \
        ("bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no")
    info = device_info(device, precision)
    names = args.models.split(",")
    started, budget = time.time(), Budget(args.budget_s, len(names) * len(MEASUREMENTS))
    report = {"benchmark": "gpu_check", "tiny": args.tiny, "status": "running", "device": info,
              "packages": package_versions(), "budget_s": args.budget_s, "models": {},
              # which aresnb ran (the carried wheel on the GPU machine), by folder and by source digest
              "code": {"aresnb": str(Path(aresnb.__file__).parent),
                       "sha256": source_digest(Path(aresnb.__file__).resolve().parent.parent)},
              "note": "random weights; transformers 5 ties T5's LM head to the embeddings, so the counts are "
                      "below the paper's 251M / 790M by one vocabulary matrix (the compute is the same)"}
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"gpu_check_{device_slug(info, args.tiny)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"gpu_check: writing {out}", flush=True)

    def save() -> None:
        report["wall_time_s"] = round(time.time() - started, 1)
        write_report(out, report)

    # A time limit's SIGTERM (timeout(1)) ends the run through the finally below: the JSON says so.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    failed: list[str] = []
    try:
        for name in names:
            report["models"][name] = entry = {}
            try:
                failed += check_model(name, TINY if args.tiny else PAPER, device, precision, budget, entry, save, print)
            except Exception as e:  # noqa: BLE001 - a model that cannot be set up; the next one still runs
                traceback.print_exc()
                entry["error"] = error_text(e)
                failed.append(f"{name} (setup)")
                print(f"gpu_check: FAILED at {name} (setup): {entry['error'].splitlines()[0]}")
        skipped = [f"{n} {k}" for n, m in report["models"].items() for k, r in m.get("measurements", {}).items()
                   if "skipped" in r]
        if failed:
            report["status"] = "failed: " + ", ".join(failed)
        elif skipped:
            report["status"] = "incomplete: skipped for time: " + ", ".join(skipped)
        else:
            report["status"] = "complete"
    except SystemExit as e:
        report["status"] = f"stopped (exit {e.code}) during the run: what it measured is kept"
        raise
    finally:
        save()
    print(f"gpu_check: {out} ({report['wall_time_s']} s): {report['status']}")
    return 1 if failed else 3 if report["status"].startswith("incomplete") else 0


if __name__ == "__main__":
    sys.exit(main())
