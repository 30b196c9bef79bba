"""aresnb.ppo: reward placement, GAE, the clipped objective, dropped replies, checkpoint resume."""

import copy
import dataclasses
import math

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from aresnb.config import PPOConfig
from aresnb.ppo import (
    PPOSample,
    clipped_policy_loss,
    collate,
    compute_gae,
    explained_variance,
    kl_penalty,
    masked_mean,
    masked_var,
    masked_whiten,
    sentence_rewards,
    split_dropped,
    train_ppo,
    value_loss,
)
from aresnb.io import read_jsonl
from aresnb.value_model import Seq2SeqValueModel


# ---- pure tensor pieces against hand-computed values ------------------------------------------


def test_sentence_rewards_sit_on_sentence_ends():
    r = sentence_rewards([[1.0, 0.2], [0.5]], [[1, 3], [0]], (2, 5))
    expected = torch.tensor([[0.0, 0.5, 0.0, -0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(r, expected)
    # two sentences ending on the same token add up
    assert torch.allclose(sentence_rewards([[1.0, 1.0]], [[2, 2]], (1, 3)), torch.tensor([[0.0, 0.0, 1.0]]))
    with pytest.raises(IndexError):
        sentence_rewards([[1.0]], [[7]], (1, 3))


def test_kl_penalty_is_minus_beta_logratio_on_real_tokens():
    lp, ref = torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[-1.5, -1.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert torch.allclose(kl_penalty(lp, ref, 0.1, mask), torch.tensor([[-0.05, 0.1, 0.0]]))


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


def test_clipped_objective_and_clip_fraction():
    old = torch.zeros(1, 4)
    # ratios e^0.5 ~ 1.65, e^-0.5 ~ 0.61, e^0.1 ~ 1.105, e^0.5
    new = torch.tensor([[0.5, -0.5, 0.1, 0.5]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4)
    loss, stats = clipped_policy_loss(new, old, adv, mask, clip_range=0.2)
    r = torch.exp(new[0])
    # token 0: A>0, ratio above 1.2 -> clipped at 1.2 (clip active)
    # token 1: A>0, ratio below 0.8 -> unclipped ratio (pessimum: -A*r > -A*0.8)
    # token 2: A<0, ratio inside -> unclipped
    # token 3: A<0, ratio above 1.2 -> unclipped (pessimum keeps the larger ratio)
    per_token = torch.tensor([-1.2, -r[1], r[2], r[3]])
    assert loss.item() == pytest.approx(per_token.mean().item(), rel=1e-6)
    assert stats["policy/clipfrac"].item() == pytest.approx(0.25)
    # gradient is zero exactly where the clip is active
    new_req = new.clone().requires_grad_(True)
    clipped_policy_loss(new_req, old, adv, mask, 0.2)[0].backward()
    assert new_req.grad[0, 0].item() == 0.0 and all(new_req.grad[0, 1:] != 0)


def test_value_loss_clipping():
    v, old, ret, m = torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.ones(1, 1)
    assert value_loss(v, old, ret, m, None)[0].item() == pytest.approx(0.5)
    # clipped value 0.5 -> (0.5-1)^2 = 0.25 < 1: the unclipped loss is the pessimum
    loss, stats = value_loss(v, old, ret, m, 0.5)
    assert loss.item() == pytest.approx(0.5) and stats["val/clipfrac"].item() == 0.0
    loss, stats = value_loss(torch.tensor([[0.9]]), torch.tensor([[-1.0]]), ret, m, 0.5)
    assert loss.item() == pytest.approx(0.5 * 1.5**2) and stats["val/clipfrac"].item() == 1.0


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
        ends = [1, resp_len - 2]
        scores = [1.0 if i % 2 else 0.0, 0.6]
        out.append(PPOSample(qid=f"q{i}", sample_index=0, source_ids=torch.randint(2, 64, (src_len,), generator=g).tolist(),
                             response_ids=resp, sentence_end_indices=ends, scores=scores, text="A b. C d."))
    return out


def ppo_cfg(**kw) -> PPOConfig:
    base = dict(batch_size=4, minibatch_size=2, ppo_epochs=2, lr=1e-3, save_every_updates=1, rollout_batch_size=3)
    base.update(kw)
    return dataclasses.replace(PPOConfig(), **base)


def run(tmp_path, samples, cfg, shared=False, **kw):
    policy = tiny_t5()
    ref = copy.deepcopy(policy)
    value = Seq2SeqValueModel.from_policy(policy, shared=shared)
    result = train_ppo(policy, ref, value, samples, cfg, tmp_path, log=lambda s: None, **kw)
    return policy, value, result


def params_of(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_collate_shifts_decoder_inputs():
    s = make_samples(2)
    b = collate(s, pad_token_id=0, decoder_start_token_id=0)
    assert b["decoder_input_ids"][0, 0].item() == 0
    assert b["decoder_input_ids"][0, 1:len(s[0].response_ids)].tolist() == s[0].response_ids[:-1]
    assert b["mask"][0].sum().item() == len(s[0].response_ids)


def test_dropped_reply_does_not_enter_the_update(tmp_path):
    samples = make_samples(8)
    bad = dataclasses.replace(samples[3], scores=None, dropped=True, response_ids=[5] * 9 + [1],
                              source_ids=[7] * 6)
    with_dropped = samples[:3] + [bad] + samples[3:]
    kept, n = split_dropped(with_dropped)
    assert n == 1 and bad not in kept
    # a wrong-length score list is left out too
    assert split_dropped([dataclasses.replace(samples[0], scores=[0.5])])[1] == 1

    cfg = ppo_cfg(batch_size=4, minibatch_size=4, ppo_epochs=1)
    p_clean, _, r_clean = run(tmp_path / "clean", samples, cfg)
    p_mixed, _, r_mixed = run(tmp_path / "mixed", with_dropped, cfg)
    assert r_mixed.dropped == 1 and r_clean.dropped == 0
    assert r_mixed.sequences_trained == r_clean.sequences_trained == 8
    assert torch.equal(params_of(p_clean), params_of(p_mixed))  # the dropped sample changed nothing
    rows = read_jsonl(tmp_path / "mixed" / "metrics.jsonl")
    assert rows[-1]["buffer/dropped"] == 1


def test_training_moves_towards_high_scores_and_logs(tmp_path):
    samples = make_samples(8)
    policy, value, result = run(tmp_path, samples, ppo_cfg(ppo_epochs=4, lr=3e-3), shared=False)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["update"] for r in rows] == [1, 2]
    for key in ("loss/policy", "loss/value", "policy/approx_kl", "policy/clipfrac", "policy/entropy",
                "objective/kl", "objective/scores", "objective/rlhf_reward", "val/explained_variance",
                "charts/sps", "response/length", "response/repetition_rate"):
        assert key in rows[0] and math.isfinite(rows[0][key]), key
    assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at first
    # ... and moved away after one update (the sign is free: the buffer is not sampled from pi)
    assert abs(rows[1]["objective/kl"]) > 1e-4
    assert rows[0]["response/repetition_rate"] == 0.0
    # log-prob of the response with the best scores went up relative to the worst
    ref = tiny_t5()

    def seq_logprob(model, s):
        b = collate([s], 0, 0)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                       decoder_input_ids=b["decoder_input_ids"]).logits
        return torch.log_softmax(logits, -1).gather(-1, b["response_ids"][..., None]).sum().item()

    policy.eval()
    gain = [seq_logprob(policy, s) - seq_logprob(ref, s) for s in samples]
    good = sum(gain[1::2]) / 4  # odd samples score 1.0 on their first sentence
    bad = sum(gain[0::2]) / 4
    assert good > bad


def test_shared_trunk_value_head_trains(tmp_path):
    policy, value, result = run(tmp_path, make_samples(4), ppo_cfg(batch_size=4), shared=True)
    assert value.trunk is policy and result.updates == 1
    assert not any(n.startswith("backbone") for n, _ in value.named_parameters())
    value.save_pretrained(tmp_path / "value")
    again = Seq2SeqValueModel.from_pretrained(tmp_path / "value", policy=policy)
    assert torch.equal(params_of(again.head), params_of(value.head))


def test_value_model_roundtrip(tmp_path):
    value = Seq2SeqValueModel.from_policy(tiny_t5(), shared=False)
    value.save_pretrained(tmp_path / "v")
    again = Seq2SeqValueModel.from_pretrained(tmp_path / "v")
    b = collate(make_samples(2), 0, 0)
    inputs = {k: b[k] for k in ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")}
    value.eval(), again.eval()
    assert torch.allclose(value(**inputs), again(**inputs))


class Killed(Exception):
    pass


def test_killed_run_resumes_from_last_checkpoint(tmp_path):
    samples = make_samples(12)
    cfg = ppo_cfg(batch_size=4, save_every_updates=1)
    full_policy, full_value, _ = run(tmp_path / "full", samples, cfg)

    def kill_after_2(update, row):
        if update == 2:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path / "killed", samples, cfg, on_update_end=kill_after_2)
    policy, value, result = run(tmp_path / "killed", samples, cfg)
    assert result.resumed_from == 2 and result.updates == 3
    assert [r["update"] for r in read_jsonl(tmp_path / "killed" / "metrics.jsonl")] == [1, 2, 3]
    assert torch.allclose(params_of(policy), params_of(full_policy), atol=1e-6)
    assert torch.allclose(params_of(value), params_of(full_value), atol=1e-6)
