"""aresnb.rl.ppo on hand-made buffers: the math, the plan over the buffer, exact first ratio,
accumulation, dropped replies, learning direction, resume."""

import dataclasses
import math

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from aresnb.config import PPOConfig
from aresnb.io import read_jsonl
from aresnb.rl.ppo import METRIC_NAMES, make_optimizer, train_ppo
from aresnb.rl.ppo_buffer import Buffer, PPOSample, plan_steps, split_dropped
from aresnb.rl.ppo_math import (compute_gae, explained_variance, kl_token_estimates, masked_mean, masked_var,
                                masked_whiten, policy_token_losses, sentence_rewards, value_token_losses)
from aresnb.rl.value_model import Seq2SeqValueModel

# ---- pure tensor pieces against hand-computed values ------------------------------------------


def test_sentence_rewards_sit_on_sentence_ends():
    r = sentence_rewards([[1.0, 0.2], [0.5]], [[1, 3], [0]], (2, 5))
    expected = torch.tensor([[0.0, 0.5, 0.0, -0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(r, expected)
    # two sentences ending on the same token add up
    assert torch.allclose(sentence_rewards([[1.0, 1.0]], [[2, 2]], (1, 3)), torch.tensor([[0.0, 0.0, 1.0]]))
    with pytest.raises(IndexError):
        sentence_rewards([[1.0]], [[7]], (1, 3))


def test_gae_matches_hand_computation():
    # gamma 0.9, lambda 0.5, values [1, 2, 3], reward 1 at the last token:
    # d2 = 1 - 3 = -2 ; d1 = 0.9*3 - 2 = 0.7 ; d0 = 0.9*2 - 1 = 0.8
    # A2 = -2 ; A1 = 0.7 + 0.45*(-2) = -0.2 ; A0 = 0.8 + 0.45*(-0.2) = 0.71
    values = torch.tensor([[1.0, 2.0, 3.0, 7.0]])  # position 3 is padding: must be ignored
    rewards = torch.tensor([[0.0, 0.0, 1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=0.5)
    assert torch.allclose(adv, torch.tensor([[0.71, -0.2, -2.0, 0.0]]), atol=1e-6)
    assert torch.allclose(ret[:, :3], torch.tensor([[1.71, 1.8, 1.0]]), atol=1e-6)


def test_gae_with_gamma_1_lambda_1_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.1, -0.3, 0.0, 0.5]])
    values = torch.tensor([[0.2, 0.4, -0.1, 0.3]])
    adv, ret = compute_gae(rewards, values, torch.ones(1, 4), gamma=1.0, lam=1.0)
    to_go = torch.tensor([[0.3, 0.2, 0.5, 0.5]])
    assert torch.allclose(ret, to_go, atol=1e-6)
    assert torch.allclose(adv, to_go - values, atol=1e-6)


def test_masked_stats():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    assert masked_var(x, m).item() == pytest.approx(1.0)  # unbiased: ((1)+(0)+(1))/2
    w = masked_whiten(x, m)
    assert masked_mean(w, m).item() == pytest.approx(0.0, abs=1e-6)
    assert w[0, 3].item() == 0.0
    assert explained_variance(x, x, m).item() == pytest.approx(1.0)


def test_clipped_objective_and_clip_indicator():
    old = torch.zeros(1, 4)
    # ratios e^0.5 ~ 1.65, e^-0.5 ~ 0.61, e^0.1 ~ 1.105, e^0.5
    new = torch.tensor([[0.5, -0.5, 0.1, 0.5]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4)
    losses, ratio, clipped = policy_token_losses(new, old, adv, mask, clip_range=0.2)
    r = torch.exp(new[0])
    # token 0: A>0, ratio above 1.2 -> clipped at 1.2 (clip active)
    # token 1: A>0, ratio below 0.8 -> unclipped ratio (pessimum: -A*r > -A*0.8)
    # token 2: A<0, ratio inside -> unclipped
    # token 3: A<0, ratio above 1.2 -> unclipped (pessimum keeps the larger ratio)
    assert torch.allclose(losses[0], torch.tensor([-1.2, -r[1], r[2], r[3]]))
    assert clipped[0].tolist() == [1.0, 0.0, 0.0, 0.0] and torch.allclose(ratio, torch.exp(new))
    # gradient is zero exactly where the clip is active
    new_req = new.clone().requires_grad_(True)
    policy_token_losses(new_req, old, adv, mask, 0.2)[0].sum().backward()
    assert new_req.grad[0, 0].item() == 0.0 and all(new_req.grad[0, 1:] != 0)


def test_value_loss_is_mse_and_clips_pessimistically():
    v, old, ret, m = torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.ones(1, 1)
    assert value_token_losses(v, old, ret, m, None)[0].item() == pytest.approx(1.0)  # MSE, not 0.5 * MSE
    # clipped value 0.5 -> (0.5-1)^2 = 0.25 < 1: the unclipped loss is the pessimum
    loss, clipped = value_token_losses(v, old, ret, m, 0.5)
    assert loss.item() == pytest.approx(1.0) and clipped.item() == 0.0
    loss, clipped = value_token_losses(torch.tensor([[0.9]]), torch.tensor([[-1.0]]), ret, m, 0.5)
    assert loss.item() == pytest.approx(1.5**2) and clipped.item() == 1.0


def test_kl_estimate_is_zero_at_the_reference_and_positive_elsewhere():
    lp = torch.tensor([[-1.0, -2.0, -0.5]])
    m = torch.tensor([[1.0, 1.0, 0.0]])
    assert torch.equal(kl_token_estimates(lp, lp, m), torch.zeros(1, 3))
    k = kl_token_estimates(lp + torch.tensor([[0.3, -0.2, 5.0]]), lp, m)
    assert (k[0, :2] > 0).all() and k[0, 2] == 0.0
    assert k[0, 0].item() == pytest.approx(math.exp(0.3) - 1 - 0.3, rel=1e-5)  # float32


# ---- the plan over one buffer -----------------------------------------------------------------


def test_plan_makes_ceil_n_over_batch_steps_per_pass_and_sorts_each_step():
    lengths = [3, 9, 4, 7, 1, 8, 2, 6, 5, 10]
    steps = plan_steps(lengths, batch_size=4, micro_batch_size=2, epochs=3, seed=0)
    assert len(steps) == math.ceil(10 / 4) * 3 and [s.index for s in steps] == list(range(1, 10))
    assert [s.epoch for s in steps] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for epoch in range(3):  # every pass sees every sequence exactly once
        assert sorted(i for s in steps if s.epoch == epoch for i in s.sequences) == list(range(10))
    assert steps[0].sequences != steps[3].sequences  # a fresh shuffle each pass
    for s in steps:
        assert [lengths[i] for i in s.sequences] == sorted((lengths[i] for i in s.sequences), reverse=True)
        assert sum(s.micro_batches, ()) == s.sequences and all(len(mb) <= 2 for mb in s.micro_batches)
        assert s.tokens == sum(lengths[i] for i in s.sequences)
    assert plan_steps(lengths, 4, 2, 3, seed=0) == steps and plan_steps(lengths, 4, 2, 3, seed=1) != steps


def test_plan_gives_every_process_the_same_number_of_micro_batches():
    lengths = list(range(1, 12))  # 11 sequences
    for n_proc in (2, 3):
        plans = [plan_steps(lengths, 5, 2, 1, seed=0, num_processes=n_proc, process_index=r) for r in range(n_proc)]
        for steps in zip(*plans):
            assert len({len(s.micro_batches) for s in steps}) == 1
            owned = [i for s in steps for mb in s.micro_batches for i in mb]
            assert sorted(owned) == sorted(steps[0].sequences)  # each sequence on exactly one process
    # a last step smaller than the process count leaves one process an empty (zero-weight) slot
    tail = [plan_steps(lengths, 5, 2, 1, 0, num_processes=2, process_index=r)[-1] for r in range(2)]
    assert tail[0].micro_batches == ((tail[0].sequences[0],),) and tail[1].micro_batches == ((),)


# ---- the loop on a tiny T5 --------------------------------------------------------------------


def tiny_t5(seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=64, d_model=32, d_ff=64, d_kv=8, num_heads=2, num_layers=1,
                   num_decoder_layers=1, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5ForConditionalGeneration(cfg)


def make_samples(n: int, seed: int = 0) -> list[PPOSample]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        src_len, resp_len = 4 + i % 3, 5 + i % 4
        resp = torch.randint(2, 64, (resp_len - 1,), generator=g).tolist() + [1]
        out.append(PPOSample(qid=f"q{i}", sample_index=0, source_ids=torch.randint(2, 64, (src_len,), generator=g).tolist(),
                             response_ids=resp, sentence_end_indices=[1, resp_len - 2],
                             scores=[1.0 if i % 2 else 0.0, 0.6], text="A b. C d."))
    return out


def ppo_cfg(**kw) -> PPOConfig:
    base = dict(batch_size=4, micro_batch_size=2, ppo_epochs=2, lr=1e-3, save_every_steps=1)
    base.update(kw)
    return dataclasses.replace(PPOConfig(), **base)


def run(out_dir, samples, cfg, shared=False, **kw):
    policy = tiny_t5()
    torch.manual_seed(1)
    value = Seq2SeqValueModel.from_policy(policy, shared=shared)
    result = train_ppo(policy, value, samples, cfg, out_dir, log=lambda s: None, **kw)
    return policy, value, result


def params_of(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_buffer_shifts_decoder_inputs_and_cuts_padding():
    s = make_samples(3)
    buf = Buffer(s, pad_token_id=0, decoder_start_token_id=0)
    b = buf.batch([0])
    assert b["decoder_input_ids"][0, 0].item() == 0
    assert b["decoder_input_ids"][0, 1:].tolist() == s[0].response_ids[:-1]
    assert b["mask"].shape[1] == len(s[0].response_ids) == b["mask"][0].sum().item()
    assert buf.batch([0, 2])["mask"].shape[1] == max(len(s[0].response_ids), len(s[2].response_ids))


def test_metrics_rows_have_exactly_the_fixed_names_and_the_expected_step_count(tmp_path):
    samples = make_samples(10)
    _, _, result = run(tmp_path, samples, ppo_cfg(batch_size=4, ppo_epochs=3))
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert result.optimizer_steps == len(rows) == math.ceil(10 / 4) * 3 and result.passes == 3
    assert all(tuple(r) == METRIC_NAMES for r in rows)
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert [r["pass"] for r in rows] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [k["pass"] for k in result.kl_by_pass] == [1, 2, 3]
    assert sum(r["buffer/sequences"] for r in rows) == 10 * 3


def test_first_optimizer_step_ratio_is_exactly_one(tmp_path):
    """The rollout statistics come from the policy that sampled the buffer, on the very micro-batches
    the first step trains: its ratio is 1 to the bit, and the KL to the reference is exactly 0."""
    _, _, result = run(tmp_path, make_samples(8), ppo_cfg(batch_size=4, micro_batch_size=2))
    first, second = result.metrics[0], result.metrics[1]
    assert first["policy/ratio_mean"] == 1.0 and first["policy/clipfrac"] == 0.0
    assert first["objective/kl"] == 0.0 and first["objective/kl_k3"] == 0.0
    assert second["policy/ratio_mean"] != 1.0 and second["objective/kl_k3"] > 0.0  # the policy moved


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """One optimizer step of 8 sequences: in 4 micro-batches of 2 or in one of 8, the same update."""
    samples = make_samples(8)
    big, big_v, _ = run(tmp_path / "big", samples, ppo_cfg(batch_size=8, micro_batch_size=8, ppo_epochs=1))
    small, small_v, _ = run(tmp_path / "small", samples, ppo_cfg(batch_size=8, micro_batch_size=2, ppo_epochs=1))
    assert not torch.equal(params_of(big), params_of(tiny_t5()))  # it trained
    assert torch.allclose(params_of(big), params_of(small), atol=1e-6, rtol=1e-5)
    assert torch.allclose(params_of(big_v), params_of(small_v), atol=1e-6, rtol=1e-5)


def test_dropped_reply_does_not_enter_the_update(tmp_path):
    samples = make_samples(8)
    bad = dataclasses.replace(samples[3], scores=None, dropped=True, response_ids=[5] * 9 + [1], source_ids=[7] * 6)
    with_dropped = samples[:3] + [bad] + samples[3:]
    kept, n = split_dropped(with_dropped)
    assert n == 1 and bad not in kept
    assert split_dropped([dataclasses.replace(samples[0], scores=[0.5])])[1] == 1  # wrong-length scores
    cfg = ppo_cfg(batch_size=4, micro_batch_size=4, ppo_epochs=1)
    p_clean, _, r_clean = run(tmp_path / "clean", samples, cfg)
    p_mixed, _, r_mixed = run(tmp_path / "mixed", with_dropped, cfg)
    assert r_mixed.dropped == 1 and r_clean.dropped == 0 and r_mixed.sequences == r_clean.sequences == 8
    assert torch.equal(params_of(p_clean), params_of(p_mixed))  # the dropped sample changed nothing


def test_optimizer_decays_weights_but_not_layer_norms_or_biases():
    policy = tiny_t5()
    value = Seq2SeqValueModel.from_policy(policy, shared=False)
    opt = make_optimizer(torch.nn.ModuleDict({"p": policy, "v": value}), ppo_cfg(weight_decay=0.01))
    decay, no_decay = (set(map(id, g["params"])) for g in opt.param_groups)
    names = {id(p): n for n, p in torch.nn.ModuleDict({"p": policy, "v": value}).named_parameters()}
    # the reference's rule (Hugging Face's): no decay on norms and on every name containing "bias",
    # which also spares T5's relative_attention_bias embedding
    assert all("layer_norm" in names[i] or "bias" in names[i] for i in no_decay)
    assert any(names[i].endswith("bias") for i in no_decay) and any("layer_norm" in names[i] for i in no_decay)
    assert any("relative_attention_bias" in names[i] for i in no_decay)
    assert not any("layer_norm" in names[i] or "bias" in names[i] for i in decay)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert opt.defaults["eps"] == 1e-8 and opt.defaults["betas"] == (0.9, 0.999)


def test_the_best_responses_gain_probability(tmp_path):
    """Pairs of responses to the same source: one scored 1.0 on every sentence, one 0.0. After
    PPO the good ones gained at least 1 nat more log-probability than the bad ones (margin)."""
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(6):
        src = torch.randint(2, 64, (5,), generator=g).tolist()
        for k, score in enumerate((1.0, 0.0)):
            resp = torch.randint(2, 64, (6,), generator=g).tolist() + [1]
            samples.append(PPOSample(f"q{i}", k, src, resp, [2, 5], [score, score]))
    policy, _, _ = run(tmp_path, samples, ppo_cfg(batch_size=12, micro_batch_size=6, ppo_epochs=8, lr=3e-3))
    ref = tiny_t5()
    buf = Buffer(samples, 0, 0)

    def seq_logprob(model, i):
        b = buf.batch([i])
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                       decoder_input_ids=b["decoder_input_ids"]).logits
        return torch.log_softmax(logits, -1).gather(-1, b["response_ids"][..., None]).sum().item()

    policy.eval()
    gain = [seq_logprob(policy, i) - seq_logprob(ref, i) for i in range(len(samples))]
    good, bad = sum(gain[0::2]) / 6, sum(gain[1::2]) / 6
    assert good - bad > 1.0, (good, bad)


def test_shared_trunk_value_head_trains(tmp_path):
    policy, value, result = run(tmp_path, make_samples(4), ppo_cfg(batch_size=4), shared=True)
    assert value.trunk is policy and result.optimizer_steps == 2
    assert not any(n.startswith("backbone") for n, _ in value.named_parameters())
    value.save_pretrained(tmp_path / "value")
    again = Seq2SeqValueModel.from_pretrained(tmp_path / "value", policy=policy)
    assert torch.equal(params_of(again.head), params_of(value.head))


def test_value_model_roundtrip(tmp_path):
    value = Seq2SeqValueModel.from_policy(tiny_t5(), shared=False)
    value.save_pretrained(tmp_path / "v")
    again = Seq2SeqValueModel.from_pretrained(tmp_path / "v")
    b = Buffer(make_samples(2), 0, 0).batch([0, 1])
    inputs = {k: b[k] for k in ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")}
    value.eval(), again.eval()
    assert torch.allclose(value(**inputs), again(**inputs))


class Killed(Exception):
    pass


def test_killed_run_resumes_exactly_from_the_last_checkpoint(tmp_path):
    samples = make_samples(12)
    cfg = ppo_cfg(batch_size=4, save_every_steps=2)
    full_policy, full_value, _ = run(tmp_path / "full", samples, cfg)

    def kill_after_3(step, row):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path / "killed", samples, cfg, on_step_end=kill_after_3)
    policy, value, result = run(tmp_path / "killed", samples, cfg)
    assert result.resumed_from_step == 2 and result.optimizer_steps == 6
    assert [r["step"] for r in read_jsonl(tmp_path / "killed" / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert torch.equal(params_of(policy), params_of(full_policy))
    assert torch.equal(params_of(value), params_of(full_value))


def test_checkpoints_of_another_buffer_are_discarded_not_resumed(tmp_path):
    samples = make_samples(8)
    cfg = ppo_cfg(batch_size=4, save_every_steps=1, ppo_epochs=1)
    run(tmp_path, samples, cfg, fingerprint="buffer-a")
    logs = []
    policy = tiny_t5()
    torch.manual_seed(1)
    result = train_ppo(policy, Seq2SeqValueModel.from_policy(policy), samples, cfg, tmp_path, fingerprint="buffer-b",
                       log=logs.append)
    assert result.resumed_from_step is None and any("discarding" in line for line in logs)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]  # the old rows were dropped


def test_the_samples_of_a_prompt_share_one_encoder_pass_with_the_same_result():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(2, 64, (6,), generator=g).tolist()
    samples = [PPOSample("q", k, src, torch.randint(2, 64, (3 + k,), generator=g).tolist() + [1], [1], [1.0])
               for k in range(3)] + make_samples(2)
    buf = Buffer(samples, 0, 0)
    batch = buf.batch(range(5))
    assert batch["input_ids"].shape[0] == 3 and batch["source_index"].tolist() == [0, 0, 0, 1, 2]
    policy = tiny_t5()
    torch.manual_seed(1)
    value = Seq2SeqValueModel.from_policy(policy)
    from aresnb.rl.ppo import ActorCritic

    logits, values = ActorCritic(policy, value).eval()(batch)
    for i in range(5):  # each row alone, with its own encoder pass
        one = buf.batch([i])
        ref = policy(input_ids=one["input_ids"], attention_mask=one["attention_mask"],
                     decoder_input_ids=one["decoder_input_ids"], decoder_attention_mask=one["decoder_attention_mask"])
        n = len(samples[i].response_ids)
        assert torch.allclose(logits[i, :n], ref.logits[0, :n], atol=1e-5)
        assert torch.allclose(values[i, :n], value(**one)[0, :n], atol=1e-5)


def test_plan_keeps_the_samples_of_a_prompt_together():
    lengths = [5, 3, 9, 2, 7, 7, 4, 1]
    groups = [0, 0, 1, 1, 2, 2, 3, 3]  # two samples per prompt
    for s in plan_steps(lengths, batch_size=4, micro_batch_size=2, epochs=2, seed=0, sort_window=2, groups=groups):
        assert all(len({groups[i] for i in mb}) == 1 for mb in s.micro_batches)


@pytest.mark.parametrize("shared", [False, True])
def test_critic_warm_up_learns_the_returns_and_leaves_the_policy_alone(tmp_path, shared):
    """The guard ppo.value_warmup_passes: the critic's error falls pass by pass; the policy is
    untouched, so the first optimizer step still has a ratio of exactly 1."""
    _, _, result = run(tmp_path, make_samples(8), ppo_cfg(batch_size=4, value_warmup_passes=4, lr=3e-3), shared=shared)
    losses = result.value_warmup_loss
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert result.metrics[0]["policy/ratio_mean"] == 1.0 and result.metrics[0]["objective/kl_k3"] == 0.0
