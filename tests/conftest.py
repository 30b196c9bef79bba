"""Shared fixtures and helpers. `smoke_run` runs the whole pipeline once per test session on smoke.yaml.

Skips: a test may skip only when what it needs is absent *by design* -- ../shared in a bare clone,
Chromium where it cannot be installed, a GPU -- and it says so through :func:`absent`. Pinned
dependencies are never absent by design: tests import them and fail when they are missing.
``.ci/run`` sets ``ARESNB_STRICT=1``: CI has ../shared, Chromium and every pinned dependency, so
there :func:`absent` fails the test instead of skipping it.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

from aresnb.paths import RunPaths

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# The end-to-end test runs smoke.yaml on a sixth of its train world and a fifth of its test world, so
# `make test` stays under 10 minutes on 2 cores: it checks that every piece works and accounts for
# everything, not the effect (that is benchmarks/ares_effect.py, on the full smoke.yaml). Every test
# that touches the run uses these.
SMOKE_TEST_SET = ["data.synthetic.n_train=160", "data.synthetic.n_val=48", "data.synthetic.n_test=48",
                  "baseline.epochs=10", "rollout.max_problems=160", "ppo.ppo_epochs=2",
                  "correction.max_problems=80"]


def smoke_test_args() -> list[str]:
    """``--set KEY=VALUE`` arguments of SMOKE_TEST_SET."""
    return [a for kv in SMOKE_TEST_SET for a in ("--set", kv)]


# pytest-timeout's limit (pyproject.toml, 900 s a test) covers a fixture's set-up too, so a subprocess
# a test waits on must time out well before it: then what a hung run reports is its own output.
SUBPROCESS_TIMEOUT_S = 600

# A distinctive key: tests grep every output for it (API keys must never reach a file).
SMOKE_SECRET = "sk-aresnb-test-SECRET-4c1d7e"
STRICT_VAR = "ARESNB_STRICT"


def strict() -> bool:
    """True under ``ARESNB_STRICT=1`` (CI): nothing a test needs may be absent."""
    return os.environ.get(STRICT_VAR, "") not in ("", "0")


def absent(what: str) -> NoReturn:
    """Skip the calling test because ``what`` is absent here by design; under ARESNB_STRICT=1 fail it."""
    if strict():
        pytest.fail(f"{what}; {STRICT_VAR}=1 (CI has it): failing instead of skipping", pytrace=False)
    pytest.skip(what)


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or :func:`absent` when this clone has no ../shared (or not that part)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        absent(f"{path} is absent: ../shared is not beside this clone")
    return path


def write_stage_notebooks(nb_dir: Path, body: str) -> Path:
    """One stand-in notebook per stage in ``nb_dir``: a parameters cell, then ``body`` with
    ``{stage}`` filled in (literal braces doubled). Runner tests point runner.NOTEBOOKS_DIR here."""
    import nbformat

    from aresnb.paths import STAGES

    nb_dir.mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell("params = None\nround_index = 1")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(body.format(stage=stage))]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, nb_dir / f"{stage}.ipynb")
    return nb_dir


@pytest.fixture(scope="session", autouse=True)
def _private_jupyter_data_dir(tmp_path_factory):
    """The runner signs executed notebooks into Jupyter's notary: the tests' own, not this user's."""
    saved = os.environ.get("JUPYTER_DATA_DIR")
    os.environ["JUPYTER_DATA_DIR"] = str(tmp_path_factory.mktemp("jupyter_data"))
    yield
    if saved is None:
        os.environ.pop("JUPYTER_DATA_DIR", None)
    else:
        os.environ["JUPYTER_DATA_DIR"] = saved


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (the real-data sample and the Flan-T5 tokenizer live there)."""
    return shared_path()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> RunPaths:
    """The full notebook pipeline on params/smoke.yaml (SMOKE_TEST_SET) through the CLI, as `make reproduce`
    runs it (what it printed: ``<outputs>/aresnb_run.stdout`` and ``.stderr``)."""
    out = tmp_path_factory.mktemp("smoke_outputs")
    env = {**os.environ, "ARESNB_TEACHER_KEY": SMOKE_SECRET, "JUPYTER_DATA_DIR": str(out / "jupyter")}
    cmd = [sys.executable, "-m", "aresnb.pipeline.cli", "run", str(ROOT / "params" / "smoke.yaml"), *smoke_test_args(),
           "--set", f"run.output_dir={out}"]
    try:
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"smoke pipeline still running after {SUBPROCESS_TIMEOUT_S} s:\n{str(e.stdout or '')[-4000:]}")
    (out / "aresnb_run.stdout").write_text(result.stdout)
    (out / "aresnb_run.stderr").write_text(result.stderr)
    log = out / "aresnb_run.stdout"
    if result.returncode != 0:
        pytest.fail(f"smoke pipeline failed (exit {result.returncode}); log {log}\n{result.stderr[-6000:]}")
    return RunPaths(run_dir=out / "smoke")


def sample_row(qid: str, sample_index: int, rationale: str) -> dict:
    """A stage-03 rollout row as sampled_batches yields it, for tests that stub the sampling."""
    from aresnb.text.sentences import split_sentences

    spans = split_sentences(rationale)
    ids = [5] * max(1, len(spans)) + [1]  # one token per sentence, then EOS
    return {"qid": qid, "sample_index": sample_index, "rationale": rationale, "response_ids": ids, "ended": True,
            "sample_logprobs": [-1.0] * len(ids), "sentences": [x.text for x in spans],
            "sentence_spans": [[x.start, x.end] for x in spans], "sentence_end_tokens": list(range(len(spans)))}


def stub_sampling(make_rows):
    """A stand-in for stage 03's ``sampled_batches``: one freshly sampled batch, ``make_rows(problems)``."""
    def sampled_batches(run, problems, stats):
        stats.update(generation_s=0.0, reused_batches=0, sampled_batches=1, processes=1)
        yield make_rows(problems)
    return sampled_batches


class BagOfWords:
    """A stand-in sentence encoder (for MiniLM, whose loading test_evaluation.py tests): normalised
    word counts over the words of the texts encoded together, so identical texts have cosine 1."""

    def encode(self, texts, normalize_embeddings=True, **kw):
        vocab = sorted({w for t in texts for w in t.lower().split()})
        v = np.array([[t.lower().split().count(w) for w in vocab] for t in texts], dtype=float) + 1e-9
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def ppo_metric_rows(n_steps: int) -> list[dict]:
    """metrics.jsonl rows of a PPO run as aresnb.rl.ppo writes them: exactly its METRIC_NAMES keys."""
    from aresnb.rl.ppo import METRIC_NAMES

    return [{**dict.fromkeys(METRIC_NAMES, 0.1 * step), "step": step, "pass": 1} for step in range(1, n_steps + 1)]


def run_every_stage(cfg) -> tuple[RunPaths, dict]:
    """Every stage's ``run``, 01 to 07 in order, on ``cfg``: the Teacher's stages against the local
    reference Teacher over HTTP, stage 07 with BagOfWords for MiniLM -> (paths, {"01": summary, ...})."""
    from aresnb.config import load_config  # deferred: the stage modules import torch
    from aresnb.stages import answer_lora, baseline, correction_sft, data, evaluation, ppo, teacher_scores
    from aresnb.teacher import start_local_server

    paths = RunPaths(cfg)
    done = {"01": data.run(cfg, paths), "02": baseline.run(cfg, paths)}
    with start_local_server(paths.dataset_dir) as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARESNB_TINY_KEY", "tiny-key")
        t_cfg = load_config(cfg.to_dict(), ["teacher.serve_local=false", f"teacher.base_url={server.base_url}",
                                            "teacher.api_key_env=ARESNB_TINY_KEY"])
        done["03"] = teacher_scores.run(t_cfg, paths, 1)
        done["04"] = ppo.run(t_cfg, paths, 1, log=lambda line: None)
        done["05"] = correction_sft.run(t_cfg, paths, 1)
        done["06"] = answer_lora.run(cfg, paths)
        mp.setattr(evaluation, "load_similarity_model", lambda name: (BagOfWords(), "bag-of-words stand-in"))
        done["07"] = evaluation.run(t_cfg, paths)
    return paths, done
