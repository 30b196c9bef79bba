"""run.mixed_precision=bf16 on the CPU through every training step (SFT, the LoRA answer head, PPO)
and through generation; model.gradient_checkpointing in the supervised trainer and in PPO.

bf16 is accelerate's autocast: the Linear layers compute in bfloat16 (a forward hook sees their
outputs), the weights and the optimizer stay float32, the losses and log-probs are float32.
Gradient checkpointing recomputes each T5 block in the backward pass (a block's forward runs
twice a step) and leaves the result as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from torch import nn

from aresnb.config import AnswerConfig, TrainConfig
from aresnb.model.distributed import make_accelerator
from aresnb.model.generation import generate_texts, sample_responses
from aresnb.rl.ppo import train_ppo
from aresnb.rl.value_model import Seq2SeqValueModel
from aresnb.sft.answer import attach_lora
from aresnb.sft.trainer import train_seq2seq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ppo import make_samples, ppo_cfg, tiny_t5  # noqa: E402
from test_sft import task, tiny_model  # noqa: E402,F401  (task: the fixture)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process: start and leave these tests clean."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@contextlib.contextmanager
def linear_output_dtypes(model: nn.Module):
    """The dtypes every nn.Linear of ``model`` produced while the block ran."""
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
             for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def all_float32(model: nn.Module) -> bool:
    return all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_supervised_step(task, tmp_path):  # noqa: F811  (task: the fixture from test_sft)
    _, feats, examples, tok = task
    model = tiny_model(tok)
    before = [p.detach().clone() for p in model.parameters()]
    with linear_output_dtypes(model) as seen:
        res = train_seq2seq(model, tok, examples, feats, TrainConfig(epochs=2, lr=3e-3, batch_size=8, log_every_steps=1), tmp_path,
                            mixed_precision="bf16", progress=False)
    assert torch.bfloat16 in seen and all_float32(res.model)
    assert all(math.isfinite(m["loss"]) for m in res.metrics) and res.last_loss < res.first_loss
    assert any(not torch.equal(a, b) for a, b in zip(before, res.model.parameters()))


def test_bf16_lora_answer_step(task, tmp_path):  # noqa: F811  (task: the fixture from test_sft)
    _, feats, examples, tok = task
    torch.manual_seed(0)
    peft_model = attach_lora(tiny_model(tok), AnswerConfig(r=4, alpha=8))
    lora = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    with linear_output_dtypes(peft_model) as seen:
        res = train_seq2seq(peft_model, tok, examples, feats, TrainConfig(epochs=1, lr=3e-3, batch_size=8), tmp_path,
                            mixed_precision="bf16", progress=False)
    assert torch.bfloat16 in seen and all_float32(res.model)
    assert all(math.isfinite(m["loss"]) for m in res.metrics)
    moved = [n for n, p in res.model.named_parameters() if n in lora and not torch.equal(p, lora[n])]
    assert moved and all("lora_" in n for n in moved)
    assert (tmp_path / "model" / "adapter_model.safetensors").exists()


def test_bf16_ppo_update(tmp_path):
    policy = tiny_t5()
    torch.manual_seed(1)
    value = Seq2SeqValueModel.from_policy(policy)
    with linear_output_dtypes(policy) as seen:
        result = train_ppo(policy, value, make_samples(8), ppo_cfg(ppo_epochs=1), tmp_path,
                           accelerator=make_accelerator("bf16"), log=lambda s: None)
    assert torch.bfloat16 in seen and all_float32(policy) and all_float32(value)
    assert result.optimizer_steps == 2
    for row in result.metrics:
        assert all(math.isfinite(v) for k, v in row.items() if isinstance(v, float)), row
    assert result.sampling_logprob_gap is None


def test_bf16_generation_greedy_and_sampled(task):  # noqa: F811  (task: the fixture from test_sft)
    problems, feats, _, tok = task
    model = tiny_model(tok, dropout=0.0).eval()
    with linear_output_dtypes(model) as seen:
        texts = generate_texts(model, tok, ["What colour is the shape?"] * 3, feats, max_new_tokens=5,
                               mixed_precision="bf16")
        batches = list(sample_responses(model, tok, problems[:3], feats[:3], num_samples=2, max_new_tokens=5,
                                        batch_size=2, mixed_precision="bf16"))
    assert torch.bfloat16 in seen and len(texts) == 3
    rows = [r for _, b in batches for r in b]
    assert len(rows) == 6 and all(len(r["sample_logprobs"]) == len(r["response_ids"]) for r in rows)
    assert all(math.isfinite(lp) and lp <= 0 for r in rows for lp in r["sample_logprobs"])


# ---- gradient checkpointing ---------------------------------------------------------------------


@pytest.fixture
def ff_calls(monkeypatch):
    """How many times T5's feed-forward layers ran (the recompute of a checkpointed block calls
    them directly, past the module hooks: counted at the class)."""
    from transformers.models.t5.modeling_t5 import T5LayerFF

    calls = [0]
    forward = T5LayerFF.forward

    def counting(self, *args, **kwargs):
        calls[0] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(T5LayerFF, "forward", counting)
    return calls


def test_gradient_checkpointing_recomputes_and_changes_nothing_sft(task, tmp_path, ff_calls):  # noqa: F811  (task: the fixture from test_sft)
    _, feats, examples, tok = task
    cfg = TrainConfig(epochs=1, lr=3e-3, batch_size=8)
    runs = {}
    for on in (False, True):
        ff_calls[0] = 0
        res = train_seq2seq(tiny_model(tok, dropout=0.0), tok, examples, feats, cfg, tmp_path / str(on),
                            gradient_checkpointing=on, progress=False)
        runs[on] = (ff_calls[0], {n: p.detach().clone() for n, p in res.model.named_parameters()})
    assert runs[True][0] == 2 * runs[False][0]  # each block's forward again in the backward pass
    # the recompute's kernels may differ in the last bits; Adam makes that ~1e-5 (one step moves ~lr = 3e-3)
    assert max(float((p - runs[False][1][n]).abs().max()) for n, p in runs[True][1].items()) < 1e-4


def test_gradient_checkpointing_recomputes_and_changes_nothing_ppo(tmp_path, ff_calls):
    runs = {}
    for on in (False, True):
        policy = tiny_t5()
        torch.manual_seed(1)
        value = Seq2SeqValueModel.from_policy(policy)
        ff_calls[0] = 0
        train_ppo(policy, value, make_samples(8), dataclasses.replace(ppo_cfg(), ppo_epochs=1), tmp_path / str(on),
                  gradient_checkpointing=on, log=lambda s: None)
        runs[on] = (ff_calls[0], torch.cat([p.detach().flatten() for p in policy.parameters()]))
    # policy and critic: the rollout statistics' forward plus every micro-batch's forward and its recompute
    assert runs[True][0] > runs[False][0]
    assert torch.allclose(runs[True][1], runs[False][1], atol=1e-5)
