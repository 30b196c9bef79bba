"""Stage 05 end to end on a tiny synthetic run: outputs, SFT from the RL checkpoint, resume, fallbacks.

The run is made here (data stage, an untrained tiny model saved as both the baseline and a
perturbed "PPO policy"), so the test needs no other stage's notebook.
"""

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from aresnb.config import load_config
from aresnb.errors import StageFailed
from aresnb.io import read_jsonl, write_jsonl
from aresnb.model.multimodal_t5 import load_rationale_model
from aresnb.model.start import build_rationale_model
from aresnb.model.tokenizer import build_or_load_tokenizer
from aresnb.paths import RunPaths
from aresnb.stages import correction_sft
from aresnb.stages import data as data_stage
from aresnb.stages.driver import load_features, load_problems
from aresnb.text.rationale_metrics import rationale_quality

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

N_CORRECTED = 8
BEFORE_RL = ["It is red. It is red.", "Cut off", "Fine."]  # the baseline's val rationales (hand-made)


def _cfg(out, name="corr", *extra):
    return load_config(None, [
        f"run.output_dir={out}", f"run.name={name}",
        "data.synthetic.n_train=12", "data.synthetic.n_val=3", "data.synthetic.n_test=3",
        "model.d_model=32", "model.d_ff=64", "model.d_kv=8", "model.num_heads=2", "model.num_layers=1",
        "model.num_decoder_layers=1", "model.vocab_size=300",
        f"correction.max_problems={N_CORRECTED}", "correction.max_new_tokens=12",
        "correction.sft.epochs=1", "correction.sft.batch_size=4", "correction.sft.lr=0.0",
        *extra,
    ])


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("correction_stage")
    cfg = _cfg(out)
    paths = RunPaths(cfg)
    data_stage.run(cfg, paths)
    data = load_problems(paths)
    tok = build_or_load_tokenizer(cfg, [p["question"] + " " + p["solution"] for p in data["train"]], paths.baseline_model_dir)
    model = build_rationale_model(cfg, tok, load_features(paths, "train").shape)
    model.save_pretrained(paths.baseline_model_dir)
    write_jsonl(paths.rationales_file("baseline", "val"), [{"qid": p["qid"], "rationale": t} for p, t in zip(data["val"], BEFORE_RL)])
    write_jsonl(paths.rationales_file("baseline", "test"), [{"qid": p["qid"], "rationale": "It is red."} for p in data["test"]])
    with torch.no_grad():  # the "PPO policy": the baseline moved a little
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(paths.ppo_policy_dir(1))
    tok.save_pretrained(paths.ppo_policy_dir(1))
    policy = _state(model)
    summary = correction_sft.run(cfg, paths, 1)
    return cfg, paths, summary, policy


def test_stage_writes_every_output(run):
    cfg, paths, s, _ = run
    stage = paths.stage_dir("05_correction_sft", 1)
    assert s["stage"] == "05_correction_sft" and s["round"] == 1 and s["wall_time_s"] > 0
    assert s["n_problems"] == N_CORRECTED == s["corrected"] + s["unchanged"] + s["fallback"]
    df = pd.read_parquet(stage / "corrections.parquet")
    assert len(df) == N_CORRECTED and df["qid"].is_unique
    assert {"qid", "rl_rationale", "deduped", "corrected", "status", "edit_distance", "raw_reply"} <= set(df.columns)
    assert set(df["status"]) <= {"corrected", "unchanged", "fallback"}
    assert s["mean_edit_distance"] == pytest.approx(df["edit_distance"].mean())
    assert (paths.sft_model_dir(1) / "config.json").exists() and (paths.sft_model_dir(1) / "tokenizer_config.json").exists()
    for split in ("val", "test"):
        assert len(read_jsonl(paths.rationales_file("round_1", split))) == 3
        assert len(read_jsonl(stage / f"rl_rationales_{split}.jsonl")) == 3
    # "before RL" is the entering model's own val file
    assert s["val_rates"]["before_rl"] == rationale_quality(BEFORE_RL)
    assert s["val_rates"]["before_rl"]["repeated_sentence_rate"] == pytest.approx(1 / 4)
    assert set(s["val_rates"]) == {"before_rl", "after_rl", "after_sft"}
    assert s["teacher"]["calls"] >= N_CORRECTED


def test_sft_starts_from_the_rl_checkpoint(run):
    _, paths, _, policy = run
    sft = load_rationale_model(paths.sft_model_dir(1)).state_dict()
    base = load_rationale_model(paths.baseline_model_dir).state_dict()
    # lr = 0: SFT leaves the weights where they started, i.e. at the PPO policy, not the baseline
    assert all(torch.equal(sft[k], policy[k]) for k in policy)
    assert not all(torch.equal(sft[k], base[k]) for k in policy)


def test_rerun_resumes_without_teacher_calls_or_retraining(run):
    cfg, paths, first, _ = run
    rl_file = paths.stage_dir("05_correction_sft", 1) / "rl_rationales_train.jsonl"
    mtime = rl_file.stat().st_mtime_ns
    s = correction_sft.run(cfg, paths, 1)
    assert s["teacher"]["calls"] == 0 and s["teacher"]["cache_hits"] >= N_CORRECTED
    assert s["sft"]["resumed_from_step"] == s["sft"]["total_steps"]
    assert rl_file.stat().st_mtime_ns == mtime  # the RL generations were reused
    assert s["restarted_with_new_inputs"] is False
    assert {k: s[k] for k in ("corrected", "unchanged", "fallback")} == {k: first[k] for k in ("corrected", "unchanged", "fallback")}


def test_unparsable_replies_keep_the_rl_rationale_and_are_counted(run, tmp_path):
    """Every reply malformed (the local server's fault injection): each row falls back to the RL
    rationale and is recorded, and the stage fails: zero corrections cannot serve the next round."""
    cfg, paths, _, _ = run
    cfg2 = _cfg(cfg.run.output_dir, "corr_faulty", "teacher.faults.rate_malformed=1.0",
                f"teacher.cache_path={tmp_path / 'faulty.sqlite'}")
    paths2 = RunPaths(cfg2)
    for part in ("01_data", "02_baseline", "round_1/04_ppo"):
        shutil.copytree(paths.run_dir / part, paths2.run_dir / part)
    with pytest.raises(StageFailed, match=f"zero corrections: .* every one of the {N_CORRECTED} rationales"):
        correction_sft.run(cfg2, paths2, 1)
    df = pd.read_parquet(paths2.stage_dir("05_correction_sft", 1) / "corrections.parquet")
    assert (df["status"] == "fallback").all() and len(df) == N_CORRECTED and (df["edit_distance"] == 0).all()
    assert (df["target"] == df["deduped"]).all() and df["corrected"].isna().all()
    assert df["raw_reply"].notna().all()
    assert not paths2.sft_model_dir(1).exists()  # no SFT on nothing


def test_notebook_runs_with_papermill_and_writes_figure3(run, tmp_path):
    import json

    import papermill

    cfg, paths, _, _ = run
    out = tmp_path / "05.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "05_correction_sft.ipynb"), str(out),
                               parameters={"params": cfg.to_dict(), "round_index": 1}, kernel_name="python3",
                               cwd=str(ROOT / "notebooks"), progress_bar=False)
    nb = json.loads(out.read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    page = (paths.figures_dir / "rationale_examples.html").read_text()
    assert page.count('class="ares-example"') == min(cfg.evaluation.n_examples, 3)
    assert "data:image/png;base64," in page  # synthetic problems have images, inlined
