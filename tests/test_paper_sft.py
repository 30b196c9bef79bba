"""SFT as the paper's code runs it (Hugging Face's Seq2SeqTrainer, under which MM-CoT and ARES train):
weight decay 0.01 spared on biases and LayerNorm weights by the same rule as the Trainer's, for every
trainer (SFT and PPO share it); clipping at 1.0; the LoRA head's targets with lm_head; the paper files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import Trainer

from aresnb.rl import ppo

from aresnb.config import load_config
from aresnb.model.multimodal_t5 import MultimodalT5Config, MultimodalT5ForConditionalGeneration
from aresnb.model.optim import weight_decay_groups
from aresnb.rl.value_model import Seq2SeqValueModel
from aresnb.sft import trainer as sft
from aresnb.sft.answer import attach_lora, load_answer_model, lora_target_modules

ROOT = Path(__file__).resolve().parent.parent
P, D = 3, 6


def tiny_model(seed: int = 0) -> MultimodalT5ForConditionalGeneration:
    torch.manual_seed(seed)
    return MultimodalT5ForConditionalGeneration(MultimodalT5Config(
        vocab_size=40, d_model=16, d_ff=32, d_kv=4, num_heads=2, num_layers=2, num_decoder_layers=2,
        dropout_rate=0.0, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, image_feature_dim=D, image_num_tokens=P))


def names_of(model: torch.nn.Module, params: list) -> set[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in params}


def trainer_decays(model: torch.nn.Module) -> set[str]:
    """What Hugging Face's Trainer.create_optimizer puts in its decayed group: its own function's
    names, among the model's (deduplicated) trainable parameters."""
    names = set(Trainer.get_decay_parameter_names(None, model))
    return {n for n, p in model.named_parameters() if n in names and p.requires_grad}


def test_decay_groups_are_hugging_face_trainers():
    """The decayed weights are exactly those Hugging Face's Trainer decays (its own function, called
    on the same model): not the fusion's biases (in_proj_bias too), not T5's relative_attention_bias,
    not the layer norms."""
    model = tiny_model()
    decay, no_decay = weight_decay_groups(model, 0.01)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)
    assert names_of(model, decay["params"]) == trainer_decays(model)
    spared = names_of(model, no_decay["params"])
    assert {"image_fusion.attention.in_proj_bias", "image_fusion.gate.bias",
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "encoder.final_layer_norm.weight"} <= spared
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))  # tied: once


def test_sft_and_ppo_optimizers_share_the_rule():
    model = tiny_model()
    cfg = load_config(None, ["baseline.weight_decay=0.01"]).baseline
    opt, _ = sft.make_optimizer(model, cfg, total_steps=10)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert names_of(model, opt.param_groups[0]["params"]) == trainer_decays(model)
    value = Seq2SeqValueModel.from_policy(model, shared=False)
    both = torch.nn.ModuleDict({"p": model, "v": value})
    ppo_opt = ppo.make_optimizer(both, load_config(None).ppo)
    assert names_of(both, ppo_opt.param_groups[0]["params"]) == trainer_decays(both)
    frozen = tiny_model()  # a LoRA-like case: only some weights train; the rest never reach the optimizer
    for n, p in frozen.named_parameters():
        p.requires_grad = n.startswith("image_fusion")
    groups = weight_decay_groups(frozen, 0.01)
    assert all(n.startswith("image_fusion") for g in groups for n in names_of(frozen, g["params"]))


def test_decay_leaves_biases_alone_in_a_training_step():
    """One AdamW step on zero gradients: decayed weights shrink by lr * wd, biases and norms stay."""
    model = tiny_model()
    cfg = load_config(None, ["baseline.weight_decay=0.5", "baseline.lr=0.1", "baseline.schedule=constant"]).baseline
    opt, _ = sft.make_optimizer(model, cfg, total_steps=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(model.named_parameters())
    assert torch.allclose(after["image_fusion.gate.weight"], before["image_fusion.gate.weight"] * (1 - 0.1 * 0.5))
    for n in ("image_fusion.gate.bias", "image_fusion.attention.in_proj_bias", "decoder.final_layer_norm.weight",
              "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"):
        assert torch.equal(after[n], before[n]), n


def test_peft_all_linear_leaves_lm_head_out_and_lora_lm_head_puts_it_in():
    """peft's own 'all-linear' skips the output layer; the reference's list of Linear names keeps it,
    which answer.lora_lm_head reproduces."""
    peft_all = get_peft_model(tiny_model(), LoraConfig(r=2, target_modules="all-linear", task_type=TaskType.SEQ_2_SEQ_LM))
    assert not any("lm_head.lora_A" in n for n, _ in peft_all.named_parameters())
    every_linear = lora_target_modules(tiny_model(), "all-linear")
    assert "lm_head" not in every_linear
    assert lora_target_modules(tiny_model(), "all-linear", lm_head=True) == sorted(every_linear + ["lm_head"])
    assert lora_target_modules(tiny_model(), ["q", "v"], lm_head=True) == ["q", "v", "lm_head"]
    cfg = load_config(None, ["answer.r=2", "answer.alpha=4", "answer.lora_lm_head=true"])
    assert any("lm_head.lora_A" in n for n, _ in attach_lora(tiny_model(), cfg.answer).named_parameters())


def test_an_lm_head_adapter_round_trips(tmp_path):
    base = tiny_model()
    base.save_pretrained(tmp_path / "base")
    model = attach_lora(base, load_config(None, ["answer.r=2", "answer.alpha=4", "answer.lora_lm_head=true"]).answer)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lm_head.lora_B" in n:  # only the head's adapter does something
                p.normal_(0, 0.5)
    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    loaded = load_answer_model(tmp_path / "base", tmp_path / "adapter")
    kw = dict(input_ids=torch.tensor([[5, 6, 7, 1]]), image_features=torch.randn(1, P, D),
              decoder_input_ids=torch.zeros(1, 3, dtype=torch.long))
    with torch.no_grad():
        a, b = model(**kw).logits, loaded(**kw).logits
        plain = MultimodalT5ForConditionalGeneration.from_pretrained(tmp_path / "base")(**kw).logits
    assert torch.equal(a, b) and not torch.allclose(a, plain)


@pytest.mark.parametrize("name", ["scienceqa_base", "scienceqa_large", "aokvqa_base"])
def test_paper_files_train_every_supervised_step_as_the_trainer_does(name):
    cfg = load_config(ROOT / "params" / f"{name}.yaml")
    for section in (cfg.baseline, cfg.correction.sft, cfg.answer.train):
        assert (section.weight_decay, section.max_grad_norm, section.schedule, section.warmup_ratio) == \
            (0.01, 1.0, "linear", 0.0)
    assert cfg.answer.lora_lm_head and cfg.answer.target_modules == "all-linear"
    assert cfg.baseline.train and cfg.model.init_from is None  # MM-CoT's files are the user's to give


def test_large_baseline_is_mmcots_large_recipe():
    """MM-CoT's run_training.sh, Large rationale: 4 GPUs x --bs 2 (8 a step), --epoch 50, --lr 5e-5."""
    base = load_config(ROOT / "params" / "scienceqa_base.yaml").baseline
    large = load_config(ROOT / "params" / "scienceqa_large.yaml").baseline
    assert (large.epochs, large.lr, large.batch_size) == (50.0, 5e-5, 8)
    assert (base.epochs, base.lr, base.batch_size) == (20.0, 8e-5, 8)


def test_aresnb_params_shows_what_the_paper_file_sets(capsys):
    from aresnb.pipeline.cli import main

    main(["params", str(ROOT / "params" / "scienceqa_base.yaml"), "--stages", "02", "--set", "baseline.lr=1e-4"])
    lines = capsys.readouterr().out.splitlines()[1:]
    shown = dict(line.strip().split(": ", 1) for line in lines)
    for section in ("baseline", "correction.sft", "answer.train"):
        assert shown[f"{section}.weight_decay"] == "0.01"
        assert shown[f"{section}.max_grad_norm"] == "1.0 (the default)"  # set by the file, so shown
    assert shown["answer.lora_lm_head"] == "true" and shown["baseline.lr"] == "0.0001"  # --set shows its value
    assert shown["model.init_from"] == "null (the default)" and "run.seed" in shown
    assert "  teacher.model: claude-3-haiku-20240307" in lines
