"""Answer inference with a LoRA adapter on the rationale model (ARES, paper Figure 4).

Instead of MM-CoT's second full model, a peft LoRA adapter on the rationale model writes
"The answer is (X)." (QCM-A; QCMG-A with a rationale in the input). Answers are extracted with
the regex; a failed extraction draws a seeded random option (and is counted). Stage 06
(:mod:`aresnb.stages.answer_lora`) trains and evaluates the heads.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn

from aresnb.config.sections import AnswerConfig
from aresnb.data import categories
from aresnb.data.prompts import extract_answer
from aresnb.model.generation import generate_texts
from aresnb.model.multimodal_t5 import load_rationale_model
from aresnb.sft.examples import make_examples


# ---- LoRA --------------------------------------------------------------------------------------


def lora_target_modules(model: nn.Module, spec: str | list[str], lm_head: bool = False) -> list[str]:
    """'all-linear' -> the names of every nn.Linear except the LM head (paper: "every Linear");
    ``lm_head`` adds the LM head, as the reference code's own list of Linear names does.

    The out_proj inside nn.MultiheadAttention is left out: MultiheadAttention reads its weight
    directly, so a LoRA there would be dead weight (peft would have to re-merge it each call).
    """
    if spec != "all-linear":
        names = list(spec) if not isinstance(spec, str) else [spec]
        return names + ["lm_head"] if lm_head and "lm_head" not in names else names
    if lm_head:
        return sorted(lora_target_modules(model, spec) + ["lm_head"])
    inside_mha = {f"{name}.{child}" for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)
                  for child, _ in m.named_children()}
    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and name != "lm_head" and name not in inside_mha}
    excluded = {n.rsplit(".", 1)[-1] for n in inside_mha} | {"lm_head"}
    clash = leaves & excluded
    if clash:
        raise ValueError(f"LoRA target names {sorted(clash)} would also match excluded layers; list answer.target_modules explicitly")
    return sorted(leaves)


@contextlib.contextmanager
def _peft_without_deprecation_notice() -> Iterator[None]:
    """peft 0.21 asks transformers 5 for ``is_gradient_checkpointing``, which warns that it is
    deprecated (a FutureWarning in every notebook 06): harmless for us, so silenced here only.
    With ``answer.lora_lm_head`` peft also warns that lm_head is tied to the embeddings (transformers 5
    reports every T5 as tied, Flan-T5's untied head included): the adapter changes the head's output
    only, as the reference's does, so that warning is silenced too."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message="Model has `tie_word_embeddings=True` and a tied layer", category=UserWarning)
        yield


def attach_lora(model: nn.Module, answer_cfg: AnswerConfig) -> Any:
    """Wrap ``model`` in a peft LoRA model with the configured r, alpha, dropout and targets."""
    config = LoraConfig(
        r=answer_cfg.r,
        lora_alpha=answer_cfg.alpha,
        lora_dropout=answer_cfg.dropout,
        target_modules=lora_target_modules(model, answer_cfg.target_modules, answer_cfg.lora_lm_head),
        task_type=TaskType.SEQ_2_SEQ_LM,
    )
    with _peft_without_deprecation_notice():
        return get_peft_model(model, config)


def trainable_fraction(peft_model: nn.Module) -> dict:
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    return {"trainable": trainable, "total": total, "fraction": trainable / total}


def load_answer_model(base_dir: str | Path, adapter_dir: str | Path, use_image: bool | None = None) -> Any:
    """The rationale model at ``base_dir`` with the saved adapter, as PeftModel.from_pretrained loads it."""
    base = load_rationale_model(base_dir, use_image=use_image)
    with _peft_without_deprecation_notice():
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
    mixed_precision: str = "no",
) -> list[dict]:
    """Greedy answers, extracted with the regex; a failed extraction draws a seeded random option."""
    examples = make_examples(problems, fmt, rationales=rationales, use_caption=use_caption)
    texts = generate_texts(model, tokenizer, [e["source"] for e in examples], features,
                           max_new_tokens=max_new_tokens, batch_size=batch_size,
                           max_source_length=max_source_length, seed=seed, mixed_precision=mixed_precision,
                           desc=f"answers {fmt}")
    rng = random.Random(seed)
    rows = []
    for p, (text,) in zip(problems, texts):
        index, ok = extract_answer(text, len(p["choices"]), rng)
        rows.append({"qid": p["qid"], "output": text, "prediction": index, "extracted": ok,
                     "answer": int(p["answer"]), "correct": index == int(p["answer"]), "categories": categories(p)})
    return rows
