"""run.num_processes: the heavy steps under `accelerate launch` (2 CPU processes over gloo here).

The SFT trainer on 2 processes makes the optimizer steps of 1 (same global batches, same step
count, the same weights to float tolerance, in sync); stage 03's sampling shares its batches of
problems out and samples each problem exactly once, the rows one process samples; every other
stage's heavy step runs launched on 2 processes, and the manifest records what a step ran on. The plan, the split of a batch, the
merge of shard files and the checks before work are tested without launching.

This file is also a launched script: ``python tests/test_multiprocess.py sft OUT_DIR``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from aresnb.config import TrainConfig, load_config
from aresnb.io import append_jsonl, read_json, read_jsonl, write_jsonl
from aresnb.model.distributed import accelerate_command, process_rank, run_launched
from aresnb.paths import RunPaths
from aresnb.pipeline import preflight
from aresnb.sft.examples import epoch_order, plan_sft_steps, process_rows

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N_SFT = 21  # batch 5: the last batch of an epoch has one row, so one process gets none


# ---- without launching ----------------------------------------------------------------------------


def test_sft_plan_is_the_seeded_epoch_order_cut_into_global_batches():
    plan = plan_sft_steps(N_SFT, batch_size=5, grad_accum=2, epochs=1.5, seed=3)
    assert [s.index for s in plan] == [1, 2, 3, 4, 5]  # ceil(5 batches / 2) = 3 a pass, 1.5 passes
    assert [len(b) for b in plan[2].batches] == [1] and [s.epoch for s in plan] == [0, 0, 0, 1, 1]
    first = [i for s in plan[:3] for b in s.batches for i in b]
    assert first == epoch_order(N_SFT, 3, 0) and sorted(first) == list(range(N_SFT))
    assert plan == plan_sft_steps(N_SFT, 5, 2, 1.5, 3)  # every process derives the same plan
    assert process_rows((7, 8, 9, 10, 11), 0, 2) == [7, 8, 9] and process_rows((7, 8, 9, 10, 11), 1, 2) == [10, 11]
    assert process_rows((4,), 1, 2) == []


def test_launch_command_and_checks_before_work(tmp_path):
    cmd = accelerate_command("aresnb.stages.launch", ["04_ppo", "--round", "1"], 2, "bf16")
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"] and "--multi_gpu" in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "2" and cmd[cmd.index("--mixed_precision") + 1] == "bf16"
    assert cmd[-5:] == ["-m", "aresnb.stages.launch", "04_ppo", "--round", "1"]
    with_file = accelerate_command("m", [], 4, config_file="ds.yaml")
    assert "--multi_gpu" not in with_file and with_file[with_file.index("--config_file") + 1] == "ds.yaml"
    cfg = load_config(None, ["run.num_processes=4", "ppo.batch_size=66", "run.accelerate_config=missing.yaml"])
    found = preflight.process_problems(cfg, ["04_ppo"], {}, tmp_path)
    assert found == ["ppo.batch_size (66) is not divisible by the 4 processes (run.num_processes=4)",
                     f"run.accelerate_config: file not found: {tmp_path / 'missing.yaml'}"]
    assert preflight.process_problems(cfg, ["01_data", "07_evaluation"], {}, tmp_path) == []  # nothing launches


def test_run_launched_streams_output_and_reports_a_failure():
    lines: list[str] = []
    run_launched([sys.executable, "-c", "import os; print('hello', os.environ['ARESNB_LAUNCHED'])"], lines.append)
    assert lines == ["hello 1"]
    with pytest.raises(RuntimeError, match=r"exit 3(.|\n)*boom"):
        run_launched([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], lambda s: None)


def test_merge_keeps_complete_batches_once_in_batch_order(tmp_path):
    from aresnb.rl.rollouts import merge_rollouts

    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=m"])
    paths = RunPaths(cfg)
    paths.stage_dir("03_teacher_scores", 1)
    expected = [4, 4, 2]  # 2 problems a batch, 2 samples each, 5 problems
    rows = {b: [{"batch": b, "qid": f"q{b}{j}"} for j in range(expected[b])] for b in range(3)}
    write_jsonl(paths.rollouts_file(1), [{"fingerprint": "fp"}, *rows[0], *rows[1][:3]])  # batch 1 cut by a kill
    write_jsonl(paths.rollout_shard_file(1, 0), [{"fingerprint": "fp"}, *rows[2]])
    write_jsonl(paths.rollout_shard_file(1, 1), [{"fingerprint": "old"}, *rows[1]])  # another policy's: ignored
    kept = merge_rollouts(paths.rollouts_file(1), paths.rollout_shard_files(1), "fp", expected)
    assert [r["batch"] for r in kept] == [0] * 4 + [2] * 2
    assert paths.rollout_shard_files(1) == [] and read_jsonl(paths.rollouts_file(1))[1:] == kept
    write_jsonl(paths.rollout_shard_file(1, 1), [{"fingerprint": "fp"}, *rows[1]])
    append_jsonl(paths.rollout_shard_file(1, 1), {"batch": 2, "qid": "half a batch"})  # a kill mid-write
    kept = merge_rollouts(paths.rollouts_file(1), paths.rollout_shard_files(1), "fp", expected)  # batch 2 stays the complete copy already kept
    assert kept == rows[0] + rows[1] + rows[2] and read_jsonl(paths.rollouts_file(1))[1:] == kept


# ---- the SFT trainer on 2 processes ---------------------------------------------------------------


def sft_run(out_dir: str, stop_after_steps: int | None = None) -> dict:
    """The run both sides make (dropout 0: the processes draw no masks); what the test compares."""
    sys.path.insert(0, str(HERE))
    from test_sft import N, P, D, problem, tiny_model

    from aresnb.sft.trainer import train_seq2seq
    from aresnb.sft.examples import make_examples
    from aresnb.model.tokenizer import train_bpe_tokenizer

    assert N >= N_SFT
    problems = [problem(i) for i in range(N_SFT)]
    feats = np.random.default_rng(0).normal(0, 1, size=(N_SFT, P, D)).astype(np.float32)
    examples = make_examples(problems, "QCM-E")
    tok = train_bpe_tokenizer([e["source"] + " " + e["target"] for e in examples], 200)
    cfg = TrainConfig(epochs=2, lr=3e-3, batch_size=5, max_grad_norm=1.0, save_every_steps=3, log_every_steps=1)
    res = train_seq2seq(tiny_model(tok, dropout=0.0), tok, examples, feats, cfg, out_dir, progress=False,
                        stop_after_steps=stop_after_steps)
    # The attention's key bias shifts every key's logit alike: its true gradient is 0, and Adam turns
    # the float noise in its place into steps of ~lr, different for any other order of summation.
    d = res.model.config.d_model
    no_key = torch.cat([torch.arange(0, d), torch.arange(2 * d, 3 * d)])  # query and value parts of in_proj_bias
    weights = torch.cat([(p.detach()[no_key] if n.endswith("attention.in_proj_bias") else p.detach()).flatten()
                         for n, p in res.model.named_parameters()])
    return {"processes": res.processes, "steps": res.steps, "weights": weights.tolist(),
            "losses": [m["loss"] for m in res.metrics], "resumed_from": res.resumed_from_step}


def launched_sft(out_dir: str) -> None:
    """An uninterrupted run in ``out_dir``; in ``out_dir/cut`` one stopped after 4 steps (as a kill
    would), then resumed from its checkpoint by a fresh trainer."""
    result = sft_run(out_dir)
    sft_run(str(Path(out_dir, "cut")), stop_after_steps=4)
    result["resumed"] = sft_run(str(Path(out_dir, "cut")))
    Path(out_dir, f"rank{process_rank()[0]}.json").write_text(json.dumps(result))


@pytest.mark.slow
def test_sft_on_two_processes_makes_the_steps_of_one_and_resumes(tmp_path):
    cmd = accelerate_command("unused", [], 2)
    cmd = cmd[: cmd.index("-m", 3)] + [str(Path(__file__)), "sft", str(tmp_path)]  # this file, not a module
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    single = sft_run(str(tmp_path / "single"))
    assert [r["processes"] for r in ranks] == [2, 2] and single["processes"] == 1
    assert ranks[0]["steps"] == ranks[1]["steps"] == single["steps"] == 10  # 5 global batches a pass, 2 passes
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP kept the processes identical
    assert ranks[0]["weights"] == pytest.approx(single["weights"], abs=1e-5)  # ... and equal to one process
    assert ranks[0]["losses"] == pytest.approx(single["losses"], rel=1e-4)  # the global mean token loss
    assert (tmp_path / "checkpoints" / "step_000010" / "trainer_state.json").exists()
    for r in ranks:  # stopped at step 4 (its checkpoint), resumed on 2 processes: the uninterrupted run
        assert r["resumed"]["resumed_from"] == 4 and r["resumed"]["weights"] == r["weights"]


# ---- stage 03: sampling sharded by problem ------------------------------------------------------------


def _problem(i: int) -> dict:
    return {"qid": f"p{i}", "question": f"Which colour is square {i}?" + " really" * (i % 4), "choices": ["red", "blue"],
            "answer": i % 2, "hint": "", "caption": "", "lecture": "", "solution": "It is red.", "image": "",
            "has_image": False, "subject": "natural science", "grade": "grade3", "category": "c", "topic": "t",
            "skill": "s", "task": "closed choice", "split": "train", "image_record": "", "features_zeroed": False}


def tiny_run(tmp_path: Path, processes: int) -> tuple:
    """A run folder with 7 train problems and a tiny saved baseline: what stage 03 samples from."""
    from aresnb.model.multimodal_t5 import MultimodalT5Config, MultimodalT5ForConditionalGeneration
    from aresnb.model.tokenizer import train_bpe_tokenizer

    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=s03", f"run.num_processes={processes}",
                             "rollout.samples_per_problem=2", "rollout.batch_size=2", "rollout.max_new_tokens=6"])
    paths = RunPaths(cfg)
    problems = [_problem(i) for i in range(7)]
    if not paths.dataset_dir.exists():
        datasets.DatasetDict(train=datasets.Dataset.from_list(problems)).save_to_disk(str(paths.dataset_dir))
        paths.features_file("train").parent.mkdir(parents=True, exist_ok=True)
        np.save(paths.features_file("train"), np.random.default_rng(0).normal(size=(7, 2, 4)).astype(np.float32))
        tok = train_bpe_tokenizer([p["question"] + " red blue Solution: It is red." for p in problems], 120)
        torch.manual_seed(0)
        model = MultimodalT5ForConditionalGeneration(MultimodalT5Config(
            vocab_size=len(tok), d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, image_feature_dim=4, image_num_tokens=2))
        model.save_pretrained(paths.baseline_model_dir)
        tok.save_pretrained(paths.baseline_model_dir)
    return cfg, paths, problems


@pytest.mark.slow
def test_stage_03_shards_the_problems_and_samples_each_once(tmp_path, monkeypatch):
    from aresnb.stages.driver import stage_run
    from aresnb.stages.teacher_scores import sampled_batches

    def sample(cfg, paths):
        stats: dict = {}
        rows = [row for batch in sampled_batches(stage_run(cfg, paths, "03_teacher_scores", 1), problems, stats)
                for row in batch]
        return sorted(rows, key=lambda r: (r["batch"], r["qid"], r["sample_index"])), stats

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(ROOT)
    cfg, paths, problems = tiny_run(tmp_path, 1)
    one, stats = sample(cfg, paths)
    assert stats["sampled_batches"] > 0 and stats["processes"] == 1 and len(one) == 14
    paths.rollouts_file(1).unlink()
    cfg2, paths2, _ = tiny_run(tmp_path, 2)
    two, stats = sample(cfg2, paths2)
    assert stats["reused_batches"] == 0 and stats["processes"] == 2
    keys = [(r["qid"], r["sample_index"]) for r in two]
    assert sorted(keys) == sorted((p["qid"], k) for p in problems for k in range(2))  # each problem once, k samples
    assert two == one  # the rows one process samples
    saved = read_jsonl(paths2.rollouts_file(1))[1:]
    assert paths2.rollout_shard_files(1) == [] and [r["batch"] for r in saved] == sorted(r["batch"] for r in saved)
    assert sorted(saved, key=lambda r: (r["batch"], r["qid"], r["sample_index"])) == two
    assert read_json(paths2.launch_dir("03_teacher_scores", 1) / "result.json")["processes"] == 2
    again, stats = sample(cfg2, paths2)  # kept: nothing launched
    assert again == two and stats["sampled_batches"] == 0 and stats["reused_batches"] > 0


# ---- the pipeline ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_stages_heavy_step_runs_launched_on_two_processes(tmp_path, monkeypatch):
    """Stages 04 (PPO), 05 (the correction_only arm's SFT: the arm reaches the launched step) and 06
    (every LoRA head in one launched process) run their heavy step under ``accelerate launch`` on 2
    processes, on test_stages.py's tiny run: each returns its figures through result.json and says it
    ran on 2 processes. Stage 03's launch is the test above; the trainers' 2-process arithmetic is
    test_sft_on_two_processes... and test_ppo_accelerate.py's; 02 and round 1's 05 run in the kernel
    here (one launch costs ~10 s of start-up), through the same ``StageRun.heavy``."""
    from aresnb.stages import answer_lora, baseline, correction_sft, data, ppo, teacher_scores
    from aresnb.teacher import start_local_server

    from test_stages import TINY

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ARESNB_TINY_KEY", "tiny-key")
    monkeypatch.chdir(ROOT)
    one = load_config(None, [f"run.output_dir={tmp_path}", "run.name=two", f"teacher.cache_path={tmp_path / 'c.sqlite'}",
                             *TINY, "ares.arms=[correction_only]"])
    paths = RunPaths(one)
    data.run(one, paths)
    with start_local_server(paths.dataset_dir) as server:
        one = load_config(one.to_dict(), ["teacher.serve_local=false", f"teacher.base_url={server.base_url}",
                                          "teacher.api_key_env=ARESNB_TINY_KEY"])
        two = load_config(one.to_dict(), ["run.num_processes=2"])
        kernel = {"02": baseline.run(one, paths), "03": teacher_scores.run(one, paths, 1)}
        summaries = {
            "04": ppo.run(two, paths, 1, log=lambda line: None),
            "05 round 1": correction_sft.run(one, paths, 1),
            "05 correction_only": correction_sft.run(two, paths, 1, arm="correction_only"),
            "06": answer_lora.run(two, paths),
        }
    assert kernel["02"]["processes"] == summaries["05 round 1"]["processes"] == 1
    summaries.pop("05 round 1")
    assert {k: s["processes"] for k, s in summaries.items()} == dict.fromkeys(summaries, 2)
    launched = {"04": paths.launch_dir("04_ppo", 1),
                "05 correction_only": paths.launch_dir("05_correction_sft", 1, "correction_only"),
                "06": paths.launch_dir("06_answer_lora")}
    for name, folder in launched.items():
        assert read_json(folder / "result.json")["processes"] == 2, name
    ppo_summary = summaries["04"]
    assert ppo_summary["optimizer_steps"] == ppo_summary["expected_optimizer_steps"]
    assert set(summaries["06"]["accuracy"]) == {"baseline", "correction_only", "ares"}


def test_the_manifest_records_the_processes_a_step_says_it_ran_on(tmp_path):
    from aresnb.pipeline.runner import stage_processes
    from aresnb.stages.steps import Step

    paths = RunPaths.from_dir(tmp_path)
    step = Step("05_correction_sft", 1, "correction_only")
    assert stage_processes(paths, step) == 1  # no summary yet: the kernel alone
    paths.stage_dir("05_correction_sft", 1, "correction_only")
    (paths.summary_file("05_correction_sft", 1, "correction_only")).write_text(json.dumps({"processes": 2}))
    assert stage_processes(paths, step) == 2


if __name__ == "__main__":
    if sys.argv[1] == "sft":
        launched_sft(sys.argv[2])
