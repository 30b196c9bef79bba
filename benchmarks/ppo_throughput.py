"""PPO throughput: aresnb.rl.ppo against TRL 0.11.4's PPOTrainer.step on the same buffer.

    .venv/bin/python benchmarks/ppo_throughput.py --shape tiny|small [--out PATH] [--repeats N]

Both sides get the same seeded buffer shaped as ARES's -- k = 4 sampled responses per prompt,
random token ids with response lengths drawn from the real ScienceQA solution lengths
("Solution: ..." in Flan-T5 tokens, from ../shared/data/scienceqa-mini; a histogram of that
sample is written below for when ../shared is absent) -- the same model shape,
the same buffer size, optimizer-step size and passes, and are timed on one whole PPO update of the
buffer: the rollout forward passes, then ``ppo_epochs`` passes of optimizer steps. No generation.

- ``ours_shared``:   aresnb.rl.ppo.train_ppo, critic head on the policy trunk (what TRL's
                     ``AutoModelForSeq2SeqLMWithValueHead`` is): the like-for-like comparison;
- ``ours_separate``: the paper's critic, a second copy of the model (twice the model work);
- ``trl``:           ``PPOTrainer.step(queries, responses, scores)`` (TRL 0.11.4, the last release
                     with seq2seq PPO; one scalar score per sample) in ``benchmarks/.venv-trl011``,
                     built by ``make bench`` (it conflicts with the project's TRL 1.16).

TRL's ``batch_size`` is our buffer, its ``mini_batch_size`` our optimizer step (``batch_size`` =
``micro_batch_size``), its ``ppo_epochs`` ours: the same number of optimizer steps on the same
sequences. Every run is a fresh process with one torch thread; the sides are interleaved
(ours_shared, trl, ours_separate, then again) so drifting machine load hits them alike. JSON:
``results.<side>.{sequences_per_s, tokens_per_s, peak_rss_mb}`` (medians over repeats) and
``ratios.{shared_vs_trl, separate_vs_trl}``.
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
SHARED = ROOT.parent / "shared"

SHAPES = {
    # the smoke model (params/smoke.yaml): the test-sized check
    "tiny": dict(vocab_size=2000, d_model=128, d_ff=256, d_kv=32, num_heads=4, num_layers=2, num_decoder_layers=2,
                 source_len=64, max_response_len=96, buffer=64, step_size=16, ppo_epochs=2),
    # T5-small-like: the shape where the comparison means something
    "small": dict(vocab_size=32128, d_model=512, d_ff=2048, d_kv=64, num_heads=8, num_layers=6, num_decoder_layers=6,
                  source_len=256, max_response_len=512, buffer=16, step_size=4, ppo_epochs=2),
}
SENTENCES = 3
SAMPLES_PER_PROMPT = 4  # ARES's k
# Lengths of "Solution: <solution>" + EOS in Flan-T5 tokens over the 150 problems of
# ../shared/data/scienceqa-mini, in 16-token bins (bin start: count); used when ../shared is absent.
FALLBACK_HISTOGRAM = {0: 29, 16: 11, 32: 38, 48: 19, 64: 16, 80: 9, 96: 6, 128: 1, 144: 5, 160: 2, 176: 3,
                      192: 2, 208: 3, 224: 2, 240: 1, 304: 1, 320: 1, 336: 1}


def scienceqa_lengths() -> tuple[list[int], str]:
    """The response lengths to draw from, and where they came from."""
    problems, tok_dir = SHARED / "data" / "scienceqa-mini" / "problems.json", SHARED / "tokenizers" / "flan-t5"
    if problems.exists() and (tok_dir / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tok_dir))
        texts = ["Solution: " + " ".join(p["solution"].split()) for p in json.loads(problems.read_text()).values()]
        return [len(ids) for ids in tok(texts)["input_ids"]], "scienceqa-mini solutions (Flan-T5 tokens)"
    return [b + 8 for b, n in FALLBACK_HISTOGRAM.items() for _ in range(n)], "fallback histogram (bin centres)"


def make_buffer(s: dict, lengths: list[int], seed: int = 0) -> list[dict]:
    """The seeded buffer both sides train on: prompt, source, response (EOS last), sentence ends, scores."""
    import torch

    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(s["buffer"]):
        if i % SAMPLES_PER_PROMPT == 0:
            source = torch.randint(3, s["vocab_size"], (s["source_len"],), generator=g).tolist()
        n = min(s["max_response_len"], max(SENTENCES + 1, lengths[int(torch.randint(len(lengths), (1,), generator=g))]))
        response = torch.randint(3, s["vocab_size"], (n - 1,), generator=g).tolist() + [1]
        rows.append({"prompt": f"p{i // SAMPLES_PER_PROMPT}", "source": source, "response": response,
                     "ends": [(j + 1) * (n - 1) // SENTENCES - 1 for j in range(SENTENCES)],
                     "scores": [round(float(x), 1) for x in torch.rand(SENTENCES, generator=g)]})
    return rows


def t5(s: dict):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(
        vocab_size=s["vocab_size"], d_model=s["d_model"], d_ff=s["d_ff"], d_kv=s["d_kv"], num_heads=s["num_heads"],
        num_layers=s["num_layers"], num_decoder_layers=s["num_decoder_layers"], feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(s: dict, rows: list[dict], critic: str) -> dict:
    import dataclasses

    sys.path.insert(0, str(ROOT))
    from aresnb.config import PPOConfig
    from aresnb.rl.ppo import train_ppo
    from aresnb.rl.ppo_buffer import PPOSample
    from aresnb.rl.value_model import Seq2SeqValueModel

    samples = [PPOSample(qid=r["prompt"], sample_index=i, source_ids=r["source"], response_ids=r["response"],
                         sentence_end_indices=r["ends"], scores=r["scores"]) for i, r in enumerate(rows)]
    policy = t5(s)
    value = Seq2SeqValueModel.from_policy(policy, shared=critic == "shared")
    cfg = dataclasses.replace(PPOConfig(), batch_size=s["step_size"], micro_batch_size=s["step_size"],
                              ppo_epochs=s["ppo_epochs"], save_every_steps=10**6, value_model=critic)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = train_ppo(policy, value, samples, cfg, out, log=lambda _: None)
        wall = time.perf_counter() - t0
    padding = statistics.fmean(m["throughput/padding_share"] for m in result.metrics)
    return {"update_s": wall, "optimizer_steps": result.optimizer_steps, "padding_share": padding}


def run_trl(s: dict, rows: list[dict]) -> dict:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from trl import AutoModelForSeq2SeqLMWithValueHead, PPOConfig, PPOTrainer, create_reference_model

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"t{i}": i for i in range(3, s["vocab_size"])}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    model = AutoModelForSeq2SeqLMWithValueHead.from_pretrained(t5(s))
    config = PPOConfig(batch_size=s["buffer"], mini_batch_size=s["step_size"], ppo_epochs=s["ppo_epochs"],
                       learning_rate=2e-5, init_kl_coef=1e-4, adap_kl_ctrl=False, gamma=1.0, lam=0.95,
                       cliprange=0.2, vf_coef=1.0, seed=0)
    trainer = PPOTrainer(config=config, model=model, ref_model=create_reference_model(model), tokenizer=tokenizer)
    queries = [torch.tensor(r["source"]) for r in rows]
    # TRL's seq2seq responses are decoder inputs as generate() returns them: start token first
    responses = [torch.tensor([0] + r["response"]) for r in rows]
    scores = [torch.tensor(sum(x - 0.5 for x in r["scores"])) for r in rows]  # one scalar per sample
    t0 = time.perf_counter()
    trainer.step(queries, responses, scores)
    wall = time.perf_counter() - t0
    steps = s["ppo_epochs"] * -(-s["buffer"] // s["step_size"])
    return {"update_s": wall, "optimizer_steps": steps, "padding_share": None}


def side_main(side: str, shape: str) -> None:
    import torch

    torch.set_num_threads(1)
    s = SHAPES[shape]
    lengths, _ = scienceqa_lengths()
    rows = make_buffer(s, lengths)
    out = run_trl(s, rows) if side == "trl" else run_ours(s, rows, side.split("_", 1)[1])
    out.update(peak_rss_mb=peak_rss_mb(), response_tokens=sum(len(r["response"]) for r in rows),
               sequences=len(rows))
    print("RESULT " + json.dumps(out))


def launch(python: Path, side: str, shape: str) -> dict:
    cmd = [str(python), str(Path(__file__).resolve()), "--side", side, "--shape", shape]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{side} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def summarise(runs: list[dict], s: dict) -> dict:
    walls = [r["update_s"] for r in runs]
    median = statistics.median(walls)
    seq = runs[0]["sequences"] * s["ppo_epochs"]
    tokens = runs[0]["response_tokens"] * s["ppo_epochs"]
    return {"sequences_per_s": seq / median, "tokens_per_s": tokens / median, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "update_s": walls, "median_update_s": median, "optimizer_steps": runs[0]["optimizer_steps"],
            "padding_share": runs[0]["padding_share"]}


def main() -> None:
    ap = argparse.ArgumentParser(description="PPO throughput: aresnb.rl.ppo vs TRL 0.11.4 PPOTrainer.step")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of each side (fresh processes)")
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/ppo_throughput_<shape>.json")
    ap.add_argument("--side", choices=["ours_shared", "ours_separate", "trl"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        side_main(args.side, args.shape)
        return
    if not TRL_PYTHON.exists():
        sys.exit(f"{TRL_PYTHON} not found: `make bench` builds the TRL 0.11.4 venv")
    s = SHAPES[args.shape]
    out_file = args.out or ROOT / "benchmarks" / "results" / f"ppo_throughput_{args.shape}.json"
    runs: dict[str, list[dict]] = {"ours_shared": [], "trl": [], "ours_separate": []}
    load_start = os.getloadavg()
    for r in range(args.repeats):
        for side in runs:
            python = TRL_PYTHON if side == "trl" else Path(sys.executable)
            runs[side].append(launch(python, side, args.shape))
            print(f"[{r + 1}/{args.repeats}] {side}: {runs[side][-1]['update_s']:.1f} s", flush=True)
    results = {side: summarise(rs, s) for side, rs in runs.items()}
    trl = results["trl"]["sequences_per_s"]
    lengths, source = scienceqa_lengths()
    report = {
        "benchmark": "ppo_throughput",
        "shape": {"name": args.shape, **s},
        "response_lengths": {"source": source, "buffer_mean": runs["trl"][0]["response_tokens"] / s["buffer"],
                             "distribution_mean": statistics.fmean(lengths), "distribution_max": max(lengths)},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads_per_side": 1, "python": platform.python_version()},
        "results": results,
        "ratios": {"shared_vs_trl": results["ours_shared"]["sequences_per_s"] / trl,
                   "separate_vs_trl": results["ours_separate"]["sequences_per_s"] / trl},
        "load_average_1_5_15min": {"start": load_start, "end": os.getloadavg()},
        "note": "sequences/s = buffer sequences x ppo_epochs / median wall time of one whole PPO update "
                "(rollout forward passes + every optimizer step); tokens/s the same with response tokens.",
    }
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(report, indent=2) + "\n")
    print(f"shared / TRL = {report['ratios']['shared_vs_trl']:.2f}x, separate / TRL = "
          f"{report['ratios']['separate_vs_trl']:.2f}x -> {out_file}")


if __name__ == "__main__":
    main()
