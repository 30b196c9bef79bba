"""The measurements of benchmarks/gpu_check.py: models at the paper's shapes with random weights,
a word-level tokenizer whose texts have exact token counts, and one function per measured step,
each run through the project's own code (the trainer's step, generation, ``train_ppo``).

A measurement is ``fn(gradient_checkpointing) -> dict``; :func:`guarded` runs it, catches an
out-of-memory error and records the peak device memory.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from ppo_throughput import FALLBACK_HISTOGRAM as SOLUTION_LENGTHS  # noqa: E402  (Flan-T5 tokens, 16-token bins)

from aresnb.model.distributed import make_accelerator  # noqa: E402
from aresnb.model.generation import generate_texts, sample_responses  # noqa: E402
from aresnb.model.multimodal_t5 import MultimodalT5Config, MultimodalT5ForConditionalGeneration, enable_gradient_checkpointing  # noqa: E402
from aresnb.rl.ppo import train_ppo  # noqa: E402
from aresnb.rl.ppo_buffer import PPOSample  # noqa: E402
from aresnb.rl.value_model import Seq2SeqValueModel  # noqa: E402
from aresnb.sft.answer import attach_lora  # noqa: E402
from aresnb.sft.examples import Collator, TokenizedExamples, plan_sft_steps  # noqa: E402
from aresnb.sft.trainer import make_optimizer, train_step  # noqa: E402

# Token lengths with the Flan-T5 tokenizer on the 150 problems of ../shared/data/scienceqa-mini:
# the expected longest of a batch (what a batch is padded to); QCMG-A carries the solution (the form
# the rationale model writes, as stage 06 trains it).
PAPER_LENGTHS = {"qcm_source_batch8": 207, "solution_batch8": 183, "qcm_source_batch16": 250,
                 "qcmg_source_batch16": 370, "answer_target": 8, "prompt_sorted": 91, "max": 512}
PAPER = {"features": (145, 1024), "new_tokens": 512, "answer_tokens": 16, "ppo_sequences": 256,
         "warmup": 2, "timed": 5, "lengths": PAPER_LENGTHS}
TINY_MODEL = {"d_model": 64, "d_ff": 128, "d_kv": 16, "num_heads": 4, "num_layers": 2, "num_decoder_layers": 2,
              "vocab_size": 512, "feed_forward_proj": "gated-gelu", "dropout_rate": 0.1, "pad_token_id": 0,
              "eos_token_id": 1, "decoder_start_token_id": 0}
TINY = {"features": (17, 64), "new_tokens": 12, "answer_tokens": 4, "ppo_sequences": 16, "warmup": 1, "timed": 2,
        "lengths": {"qcm_source_batch8": 24, "solution_batch8": 16, "qcm_source_batch16": 24, "qcmg_source_batch16": 48,
                    "answer_target": 8, "prompt_sorted": 20, "max": 64},
        "batches": {"sft": 4, "lora": 4, "generation": 4, "micro": 4}, "lora_r": 8}


# ---- device, model, tokenizer ------------------------------------------------------------------


def best_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def device_info(device: torch.device, precision: str) -> dict:
    info = {"kind": device.type, "torch": torch.__version__, "precision": precision, "python": platform.python_version()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gb=round(props.total_memory / 1e9, 1), count=torch.cuda.device_count())
    else:
        info.update(name=platform.processor() or platform.machine(), memory_gb=None, count=1)
    return info


def word_tokenizer(vocab_size: int) -> Any:
    """A fast tokenizer whose words are token ids ("t17" -> 17): texts of exactly the lengths a
    measurement needs, for the project's own batching and generation code."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"t{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def words(n_tokens: int, vocab_size: int, offset: int = 0) -> str:
    """A text of ``n_tokens`` tokens with EOS (at least 1)."""
    return " ".join(f"t{3 + (offset + 7919 * i) % (vocab_size - 3)}" for i in range(max(0, n_tokens - 1)))


def model_config(name: str, shape: dict) -> MultimodalT5Config:
    if shape is TINY:
        base = dict(TINY_MODEL)
    else:
        raw = json.loads((ROOT / "benchmarks" / "configs" / f"flan_alpaca_{name}.json").read_text())
        base = {k: v for k, v in raw.items() if not k.startswith("_") and k not in ("architectures", "model_type")}
    patches, dim = shape["features"]
    return MultimodalT5Config(**base, image_num_tokens=patches, image_feature_dim=dim)


def build_model(config: MultimodalT5Config, device: torch.device) -> MultimodalT5ForConditionalGeneration:
    torch.manual_seed(0)
    with device:  # random weights made where they will live
        return MultimodalT5ForConditionalGeneration(config)


def random_features(n: int, shape: dict) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 1, size=(n, *shape["features"])).astype(np.float32)


# ---- one measurement ---------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def guarded(fn: Callable[[bool], dict], device: torch.device, checkpointing_fallback: bool) -> dict:
    """Run one measurement; record peak device memory and whether it fit (an OOM is caught). With
    ``checkpointing_fallback`` a step that does not fit is tried again with gradient checkpointing."""
    for checkpointing in ((False, True) if checkpointing_fallback else (False,)):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.time()
        try:
            out = {**fn(checkpointing), "fit": True}
        except (RuntimeError, torch.OutOfMemoryError) as e:
            if not _is_oom(e):
                raise
            out = {"fit": False, "error": str(e).splitlines()[0][:300]}
        gc.collect()
        if device.type == "cuda":
            out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
            torch.cuda.empty_cache()
        else:
            out["peak_memory_gb"] = None  # the CPU has no device memory counter to reset
        out.update(gradient_checkpointing=checkpointing, wall_s=round(time.time() - started, 2))
        if out["fit"]:
            break
    return out


def timed(step: Callable[[], Any], device: torch.device, warmup: int, timed_steps: int,
          deadline: float | None = None) -> list[float]:
    """Seconds of each of up to ``timed_steps`` steps after ``warmup`` untimed ones; at least one
    is timed, and no further one starts when it would end past ``deadline`` (perf_counter)."""
    times = []
    for i in range(warmup + timed_steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if i >= warmup and deadline is not None and time.perf_counter() + times[-1] > deadline:
            break
    return times[warmup:]


# ---- the measurements --------------------------------------------------------------------------


def supervised_steps(ctx: dict, batch: int, source: int, target: int, lora: Any = None, steps: int | None = None) -> Callable:
    """Optimizer steps of the supervised trainer (the LoRA head's when ``lora``) at fixed lengths."""
    def run(checkpointing: bool) -> dict:
        shape, device, vocab = ctx["shape"], ctx["device"], ctx["config"].vocab_size
        n_timed = steps if steps is not None else shape["timed"]
        warmup = 1 if steps is not None else shape["warmup"]
        model = build_model(ctx["config"], device)
        if lora is not None:
            model = attach_lora(model, lora)
        if checkpointing:
            enable_gradient_checkpointing(model)
        n = batch * (warmup + n_timed)
        examples = [{"source": words(source, vocab, i), "target": words(target, vocab, 3 * i), "feature_index": i % 8}
                    for i in range(n)]
        tok = ctx["tokenizer"]
        data = TokenizedExamples(tok, examples, source, target)
        collate = Collator(tok.pad_token_id, random_features(8, shape), model.config.decoder_start_token_id)
        plan = iter(plan_sft_steps(n, batch, 1, 1.0, seed=0))
        accelerator = make_accelerator(ctx["precision"])
        optimizer, _ = make_optimizer(model, ctx["recipe"].baseline, n // batch)
        model, optimizer = accelerator.prepare(model, optimizer)
        model.train()

        def one() -> None:
            train_step(model, data, collate, next(plan), accelerator)
            optimizer.step()
            optimizer.zero_grad()

        times = timed(one, device, warmup, n_timed, ctx.get("deadline"))
        accelerator.free_memory()
        step_s = statistics.median(times)
        return {"batch": batch, "source_tokens": source, "target_tokens": target, "timed_steps": len(times),
                "step_s": round(step_s, 4), "samples_per_s": round(batch / step_s, 2)}
    return run


def generation(ctx: dict, prompts: int, new_tokens: int, k: int, sampled: bool) -> Callable:
    """One generation batch held to ``new_tokens`` for every sequence (the batch's upper bound),
    after a short warm-up batch."""
    def run(checkpointing: bool) -> dict:
        shape, device, vocab, tok = ctx["shape"], ctx["device"], ctx["config"].vocab_size, ctx["tokenizer"]
        model = build_model(ctx["config"], device).eval()
        source = shape["lengths"]["prompt_sorted"]
        feats = random_features(prompts, shape)
        problems = [{"qid": f"q{i}", "question": words(source - 10, vocab, i), "choices": ["t5", "t6"], "hint": "",
                     "caption": ""} for i in range(prompts)]
        sources = [words(source, vocab, i) for i in range(prompts)]

        def go(tokens: int) -> float:
            model.generation_config.min_new_tokens = tokens  # no early EOS: the full length every time
            kw = dict(max_new_tokens=tokens, batch_size=prompts, max_source_length=source, mixed_precision=ctx["precision"])
            step = (lambda: list(sample_responses(model, tok, problems, feats, num_samples=k, **kw))) if sampled else \
                (lambda: generate_texts(model, tok, sources, feats, **kw))
            return timed(step, device, 0, 1)[0]

        go(min(8, new_tokens))
        batch_s = go(new_tokens)
        sequences = prompts * (k if sampled else 1)
        return {"prompts": prompts, "samples_per_prompt": k if sampled else 1, "new_tokens": new_tokens,
                "batch_s": round(batch_s, 3), "tokens_per_s": round(sequences * new_tokens / batch_s, 1)}
    return run


class _Stop(Exception):
    """Ends train_ppo after the timed steps, before its final checkpoint (a Large one is ~20 GB)."""


def ppo_buffer(ctx: dict, sequences: int) -> tuple[list[PPOSample], np.ndarray]:
    """k = 4 samples per prompt; responses as long as ScienceQA solutions (capped), scored sentences."""
    rng = np.random.default_rng(0)
    lengths = ctx["shape"]["lengths"]
    starts = rng.choice(list(SOLUTION_LENGTHS), size=sequences, p=np.array(list(SOLUTION_LENGTHS.values())) /
                        sum(SOLUTION_LENGTHS.values()))
    vocab, k = ctx["config"].vocab_size, 4
    samples = []
    for i in range(sequences):
        n = int(min(lengths["max"] - 2, max(4, starts[i] + rng.integers(0, 16)))) + 2
        ends = list(range(min(19, n - 2), n - 1, 20)) or [n - 2]
        src = int(rng.integers(lengths["prompt_sorted"] // 2, 2 * lengths["prompt_sorted"]))
        samples.append(PPOSample(qid=f"q{i // k}", sample_index=i % k, source_ids=rng.integers(3, vocab, src).tolist() + [1],
                                 response_ids=rng.integers(3, vocab, n - 1).tolist() + [1], sentence_end_indices=ends,
                                 scores=[round(float(x), 1) for x in rng.uniform(0, 1, len(ends))], feature_row=i // k))
    return samples, random_features(math.ceil(sequences / k), ctx["shape"])


def ppo_steps(ctx: dict) -> Callable:
    """train_ppo (separate critic) on a buffer of 3 optimizer steps; the first untimed, the second
    timed, then stopped (before the last step, which would write a final checkpoint: ~20 GB at Large)."""
    def run(checkpointing: bool) -> dict:
        shape, device = ctx["shape"], ctx["device"]
        batch = shape["ppo_sequences"]
        micro = shape.get("batches", {}).get("micro", ctx["recipe"].ppo.micro_batch_size)
        cfg = dataclasses.replace(ctx["recipe"].ppo, batch_size=batch, micro_batch_size=micro, ppo_epochs=1,
                                  save_every_steps=10**9, log_every_steps=10**9, max_steps=None)
        samples, feats = ppo_buffer(ctx, 3 * batch)
        policy = build_model(ctx["config"], device)
        value = Seq2SeqValueModel.from_policy(policy)
        rows, started = [], time.perf_counter()

        def on_step(index: int, row: dict) -> None:  # index: 1-based
            rows.append({**row, "at": time.perf_counter() - started})
            if index == 2:
                raise _Stop

        with tempfile.TemporaryDirectory() as out:
            try:
                train_ppo(policy, value, samples, cfg, out, accelerator=make_accelerator(ctx["precision"]),
                          features=feats, gradient_checkpointing=checkpointing, on_step_end=on_step, log=lambda s: None)
            except _Stop:
                pass
        step_s = rows[1]["time/step_s"]
        return {"sequences_per_step": batch, "micro_batch": micro, "buffer": len(samples), "timed_steps": 1,
                "step_s": round(step_s, 3), "sequences_per_s": round(batch / step_s, 2),
                "tokens_per_s": round(rows[1]["throughput/tokens_per_s"], 1),
                "rollout_statistics_s_per_sequence": (rows[0]["at"] - rows[0]["time/step_s"]) / len(samples)}
    return run


MEASUREMENTS = ("sft", "sft_max_length", "lora_qcm_a", "lora_qcmg_a", "sampling", "greedy", "answers", "ppo")


def measurements(ctx: dict) -> dict[str, Callable]:
    """What is measured, in order (MEASUREMENTS): name -> measurement. Each reads ``ctx["deadline"]``
    (perf_counter; None: no limit) when it runs, to decide how many timed steps fit."""
    shape, recipe = ctx["shape"], ctx["recipe"]
    n, length = shape.get("batches", {}), shape["lengths"]
    lora = dataclasses.replace(recipe.answer, r=shape.get("lora_r", recipe.answer.r),
                               alpha=2 * shape.get("lora_r", recipe.answer.r))
    sft_batch, lora_batch = n.get("sft", recipe.baseline.batch_size), n.get("lora", recipe.answer.train.batch_size)
    prompts = n.get("generation", recipe.rollout.batch_size)
    return {
        "sft": supervised_steps(ctx, sft_batch, length["qcm_source_batch8"], length["solution_batch8"]),
        "sft_max_length": supervised_steps(ctx, sft_batch, length["max"], length["max"], steps=1),
        "lora_qcm_a": supervised_steps(ctx, lora_batch, length["qcm_source_batch16"], length["answer_target"], lora),
        "lora_qcmg_a": supervised_steps(ctx, lora_batch, length["qcmg_source_batch16"], length["answer_target"], lora),
        "sampling": generation(ctx, prompts, shape["new_tokens"], recipe.rollout.samples_per_problem, sampled=True),
        "greedy": generation(ctx, prompts, shape["new_tokens"], 1, sampled=False),
        "answers": generation(ctx, prompts, shape["answer_tokens"], 1, sampled=False),
        "ppo": ppo_steps(ctx),
    }
