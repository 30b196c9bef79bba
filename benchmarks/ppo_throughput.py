"""PPO update throughput: aresnb.ppo against TRL 0.11.4's PPOTrainer (seq2seq, value head).

Both sides get the same tiny T5 (the smoke model's sizes), the same buffer of random token
sequences (seeded), the same batch / minibatch / epochs, and are timed on what one PPO update
does: policy / reference / value forward passes over the batch, then ``ppo_epochs`` passes of
minibatch forward/backward/AdamW. No generation on either side.

- ours:  ``aresnb.ppo.train_ppo`` in the main venv, critic as a head on the policy trunk
         (``shared``, what TRL's ``AutoModelForSeq2SeqLMWithValueHead`` is) and as a separate copy
         (``separate``, the paper's critic: two forward passes per step).
- TRL:   ``PPOTrainer.step(queries, responses, scores)`` (one scalar score per sample) in
         ``benchmarks/.venv-trl011`` (TRL 0.11.4 conflicts with the project's TRL 1.16).

Each side runs in its own fresh process, so peak RSS is comparable. Usage (from the project root):

    python3.11 -m venv benchmarks/.venv-trl011
    benchmarks/.venv-trl011/bin/pip install torch==2.13.0 trl==0.11.4 transformers==5.24.0 accelerate==1.15.0
    .venv/bin/python benchmarks/ppo_throughput.py            # -> benchmarks/results/ppo_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRL_PYTHON = ROOT / "benchmarks" / ".venv-trl011" / "bin" / "python"
RESULT = ROOT / "benchmarks" / "results" / "ppo_throughput.json"

# The smoke model's sizes (params/smoke.yaml -> model.*) and a smoke-sized PPO batch.
SETTINGS = dict(
    vocab_size=2000, d_model=128, d_ff=256, d_kv=32, num_heads=4, num_layers=2, num_decoder_layers=2,
    batch_size=64, minibatch_size=16, ppo_epochs=2, source_len=64, response_len=48, sentences=3,
    lr=2e-5, warmup_updates=1, timed_updates=2, seed=0,
)


def rss_mb() -> float:
    """Current resident set size (MB), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiny_t5(s: dict):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(s["seed"])
    cfg = T5Config(vocab_size=s["vocab_size"], d_model=s["d_model"], d_ff=s["d_ff"], d_kv=s["d_kv"],
                   num_heads=s["num_heads"], num_layers=s["num_layers"], num_decoder_layers=s["num_decoder_layers"],
                   feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5ForConditionalGeneration(cfg)


def buffer(s: dict, n: int) -> list[dict]:
    """n random (source, response ending in EOS, sentence ends, sentence scores) rows, seeded."""
    import torch

    g = torch.Generator().manual_seed(s["seed"] + 1)
    L, k = s["response_len"], s["sentences"]
    rows = []
    for _ in range(n):
        response = torch.randint(3, s["vocab_size"], (L - 1,), generator=g).tolist() + [1]
        ends = [(j + 1) * (L - 1) // k - 1 for j in range(k)]
        rows.append({"source": torch.randint(3, s["vocab_size"], (s["source_len"],), generator=g).tolist(),
                     "response": response, "ends": ends,
                     "scores": [round(float(x), 1) for x in torch.rand(k, generator=g)]})
    return rows


def run_ours(s: dict, value_model: str) -> dict:
    import copy
    import dataclasses

    import torch

    sys.path.insert(0, str(ROOT))
    from aresnb.config import PPOConfig
    from aresnb.ppo import PPOSample, train_ppo
    from aresnb.value_model import Seq2SeqValueModel

    n_updates = s["warmup_updates"] + s["timed_updates"]
    rows = buffer(s, s["batch_size"] * n_updates)
    samples = [PPOSample(qid=str(i), sample_index=0, source_ids=r["source"], response_ids=r["response"],
                         sentence_end_indices=r["ends"], scores=r["scores"]) for i, r in enumerate(rows)]
    policy = tiny_t5(s)
    ref = copy.deepcopy(policy)
    value = Seq2SeqValueModel.from_policy(policy, shared=value_model == "shared")
    cfg = dataclasses.replace(PPOConfig(), batch_size=s["batch_size"], minibatch_size=s["minibatch_size"],
                              ppo_epochs=s["ppo_epochs"], lr=s["lr"], save_every_updates=10**6,
                              rollout_batch_size=s["batch_size"], value_model=value_model)
    rss_before = rss_mb()
    with tempfile.TemporaryDirectory() as out:
        result = train_ppo(policy, ref, value, samples, cfg, out, log=lambda _: None)
    times = [m["time/update_s"] for m in result.metrics][s["warmup_updates"]:]
    cpu = [m["time/update_cpu_s"] for m in result.metrics][s["warmup_updates"]:]
    return {"update_s": times, "update_cpu_s": cpu, "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb(),
            "parameters_trained": sum(p.numel() for p in {id(p): p for m in (policy, value) for p in m.parameters()}.values())}


def run_trl(s: dict) -> dict:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from trl import AutoModelForSeq2SeqLMWithValueHead, PPOConfig, PPOTrainer, create_reference_model

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"t{i}": i for i in range(3, s["vocab_size"])}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")

    model = AutoModelForSeq2SeqLMWithValueHead.from_pretrained(tiny_t5(s))
    ref = create_reference_model(model)
    config = PPOConfig(batch_size=s["batch_size"], mini_batch_size=s["minibatch_size"], ppo_epochs=s["ppo_epochs"],
                       learning_rate=s["lr"], init_kl_coef=1e-4, adap_kl_ctrl=False, gamma=1.0, lam=0.95,
                       cliprange=0.2, vf_coef=1.0, seed=s["seed"], forward_batch_size=None)
    trainer = PPOTrainer(config=config, model=model, ref_model=ref, tokenizer=tokenizer)
    n_updates = s["warmup_updates"] + s["timed_updates"]
    rows = buffer(s, s["batch_size"] * n_updates)
    rss_before = rss_mb()
    times, cpu = [], []
    for u in range(n_updates):
        batch = rows[u * s["batch_size"]: (u + 1) * s["batch_size"]]
        queries = [torch.tensor(r["source"]) for r in batch]
        # TRL's seq2seq responses are decoder inputs as generate() returns them: start token first
        responses = [torch.tensor([0] + r["response"]) for r in batch]
        scores = [torch.tensor(sum(x - 0.5 for x in r["scores"])) for r in batch]  # one scalar per sample
        t0, c0 = time.time(), time.process_time()
        trainer.step(queries, responses, scores)
        times.append(time.time() - t0)
        cpu.append(time.process_time() - c0)
    n_params = sum(p.numel() for p in model.parameters())
    return {"update_s": times[s["warmup_updates"]:], "update_cpu_s": cpu[s["warmup_updates"]:], "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb(),
            "parameters_trained": n_params}


def side_main(side: str, settings: dict) -> None:
    import torch

    torch.set_num_threads(settings["threads"])
    out = run_trl(settings) if side == "trl" else run_ours(settings, side.split("-", 1)[1])
    import transformers

    out["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    if side == "trl":
        import trl

        out["versions"]["trl"] = trl.__version__
    print("RESULT " + json.dumps(out))


def launch(python: Path, side: str, settings: dict) -> dict:
    cmd = [str(python), str(Path(__file__).resolve()), "--side", side, "--settings", json.dumps(settings)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{side} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def summarise(raw: dict, s: dict) -> dict:
    median = statistics.median(raw["update_s"])
    median_cpu = statistics.median(raw["update_cpu_s"])
    return {"sequences_per_s": s["batch_size"] / median, "median_update_s": median, "update_s": raw["update_s"],
            "sequences_per_cpu_s": s["batch_size"] / median_cpu, "median_update_cpu_s": median_cpu,
            "peak_rss_mb": raw["peak_rss_mb"], "peak_rss_over_start_mb": raw["peak_rss_mb"] - raw["rss_before_mb"],
            "parameters_trained": raw["parameters_trained"], "versions": raw.get("versions", {})}


def main() -> None:
    ap = argparse.ArgumentParser(description="PPO update throughput: aresnb.ppo vs TRL 0.11.4")
    ap.add_argument("--side", choices=["ours-shared", "ours-separate", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each side (1: steadier on a shared machine)")
    ap.add_argument("--timed-updates", type=int, default=SETTINGS["timed_updates"])
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()
    if args.side:
        side_main(args.side, json.loads(args.settings))
        return
    if not TRL_PYTHON.exists():
        sys.exit(f"{TRL_PYTHON} not found: create the TRL 0.11.4 venv first (see this file's docstring)")
    settings = {**SETTINGS, "threads": args.threads, "timed_updates": args.timed_updates}
    results, load_start = {}, os.getloadavg()
    for side, python in (("ours-shared", Path(sys.executable)), ("trl", TRL_PYTHON), ("ours-separate", Path(sys.executable))):
        print(f"running {side} ...", flush=True)
        results[side] = summarise(launch(python, side, settings), settings)
        print(f"  {results[side]['sequences_per_s']:.1f} seq/s, peak RSS {results[side]['peak_rss_mb']:.0f} MB", flush=True)
    trl_sps = results["trl"]["sequences_per_s"]
    report = {
        "benchmark": "ppo_update_throughput",
        "settings": settings,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
        "ratio_ours_shared_over_trl": results["ours-shared"]["sequences_per_s"] / trl_sps,
        "ratio_ours_separate_over_trl": results["ours-separate"]["sequences_per_s"] / trl_sps,
        "cpu_ratio_ours_shared_over_trl": results["ours-shared"]["sequences_per_cpu_s"] / results["trl"]["sequences_per_cpu_s"],
        "cpu_ratio_ours_separate_over_trl": results["ours-separate"]["sequences_per_cpu_s"] / results["trl"]["sequences_per_cpu_s"],
        "load_average_1_5_15min": {"start": load_start, "end": os.getloadavg()},
        "note": "sequences/s = batch_size / median PPO update time (rollout forward passes + ppo_epochs of "
                "minibatch updates; no generation). 'shared' is the like-for-like comparison (TRL's value head "
                "sits on the policy trunk); 'separate' is the paper's critic copy (twice the forward work). "
                "sequences_per_cpu_s divides by process CPU time instead of wall time: steadier when other "
                "work shares the machine.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"ours (shared trunk) / TRL 0.11.4 = {report['ratio_ours_shared_over_trl']:.2f}x; "
          f"ours (separate critic) / TRL = {report['ratio_ours_separate_over_trl']:.2f}x -> {args.out}")


if __name__ == "__main__":
    main()
