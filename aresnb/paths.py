"""Where a run keeps what it writes: the only code that builds a path inside ``outputs/<run>/``.

Data flows one way, stage by stage; each stage reads what earlier stages wrote and writes its
own folder. Stages 03-05 repeat once per ARES round and write under ``round_<i>/``; the runner
mirrors the latest round's ``summary.json`` into ``<stage>/summary.json``.

    outputs/<run>/
      manifest.json  params.yaml  run.lock (held while a run writes)  tables/  figures/
      notebooks/     <stage>[.round_i].ipynb (executed, trusted) and .html, .kernel.log, .progress.log
      tracking/      <stage>/... event files of run.log_with's trackers (TensorBoard, ...)
      teacher/  report.html
      01_data/        dataset/ (DatasetDict)  features/<split>.npy  summary.json
      02_baseline/    model/ (save_pretrained + tokenizer)  checkpoints/  metrics.jsonl
                      rationales_val.jsonl  rationales_test.jsonl  summary.json
      round_<i>/03_teacher_scores/  rollouts.jsonl (rollouts.rank<r>.jsonl while sampling)  samples.parquet
                                    summary.json
      <stage>/launch/  params.yaml  result.json   (a heavy step run under accelerate launch)
      round_<i>/04_ppo/             policy/  value/  checkpoints/  metrics.jsonl  eval_{before,after}.json
      round_<i>/05_correction_sft/  rl_rationales_<split>.jsonl  corrections.parquet  model/
                                    checkpoints/  metrics.jsonl  rationales_{val,test}.jsonl
      correction_only/05_correction_sft/  as round_<i>/05_correction_sft/, on the baseline (ares.arms)
      06_answer_lora/ <model_name>/<format>/adapter/  predictions_test.jsonl  summary.json
      07_evaluation/  judgments.jsonl (ARES vs the baseline)  judgments_<arm>_vs_<other>.jsonl  summary.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The stage names, defined once: every other module refers to these constants.
DATA = "01_data"
BASELINE = "02_baseline"
TEACHER_SCORES = "03_teacher_scores"
PPO = "04_ppo"
CORRECTION_SFT = "05_correction_sft"
ANSWER_LORA = "06_answer_lora"
EVALUATION = "07_evaluation"
STAGES = (DATA, BASELINE, TEACHER_SCORES, PPO, CORRECTION_SFT, ANSWER_LORA, EVALUATION)
ROUND_STAGES = (TEACHER_SCORES, PPO, CORRECTION_SFT)
# What each stage does, in words (the terminal's stage lines, the report's section titles).
STAGE_TITLES = {
    DATA: "Data",
    BASELINE: "Baseline rationale model (SFT)",
    TEACHER_SCORES: "Teacher scores of sampled rationales",
    PPO: "PPO with sentence-level Teacher rewards",
    CORRECTION_SFT: "Teacher corrections and SFT on them",
    ANSWER_LORA: "Answer accuracy (LoRA answer head)",
    EVALUATION: "Evaluation: win rate, accuracy, rationale quality",
}

BASELINE_MODEL = "baseline"  # the name of the baseline's rationales / answer heads
ARES_MODEL = "ares"  # the final ARES model (the last round's corrected SFT model) in stages 06 and 07

# The ablation arms (``ares.arms``): models built beside ARES so that a run can say what each half adds.
RL_ONLY = "rl_only"  # the round-1 PPO policy as the final model: RL without the correction SFT
CORRECTION_ONLY = "correction_only"  # stage 05 on the baseline: its own rationales corrected, SFT, no RL
EVERY_ROUND = "every_round"  # ARES after each earlier round as well (``round_<i>``)
ARMS = (RL_ONLY, CORRECTION_ONLY, EVERY_ROUND)
ARM_STEPS = ((CORRECTION_SFT, CORRECTION_ONLY),)  # (stage, arm): the one step an arm runs itself, round 1's


def round_model(round_index: int) -> str:
    """The name of the model a round ends with (its corrected SFT model): ``round_<i>``."""
    return f"round_{round_index}"


class RunPaths:
    """Paths of one run. ``RunPaths(cfg)`` or ``RunPaths.from_dir(path)``."""

    def __init__(self, cfg: Any = None, run_dir: str | Path | None = None):
        if run_dir is None:
            run_dir = cfg.run_dir()
        self.run_dir = Path(run_dir)
        self.cfg = cfg

    @classmethod
    def from_dir(cls, run_dir: str | Path) -> "RunPaths":
        return cls(run_dir=run_dir)

    # ---- top level -----------------------------------------------------------------------
    @property
    def manifest(self) -> Path:
        return self.run_dir / "manifest.json"

    @property
    def lock_file(self) -> Path:
        """flock-ed by ``aresnb run`` while it writes this folder (aresnb.pipeline.runlock)."""
        return self.run_dir / "run.lock"

    @property
    def params_file(self) -> Path:
        return self.run_dir / "params.yaml"

    @property
    def notebooks_dir(self) -> Path:
        return self.run_dir / "notebooks"

    @property
    def tables_dir(self) -> Path:
        return self.run_dir / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.run_dir / "figures"

    @property
    def teacher_dir(self) -> Path:
        """The local Teacher server's log and the run's cassette of every reply it used."""
        return _mk(self.run_dir / "teacher")

    def tracking_dir(self, name: str = "") -> Path:
        """Where the experiment trackers of ``run.log_with`` write (TensorBoard: ``<name>/events.*``)."""
        return self.run_dir / "tracking" / name if name else self.run_dir / "tracking"

    def executed_notebook_html(self, notebook_name: str) -> Path:
        """The HTML export of an executed notebook (``notebooks/<stage>[.round_i].html``)."""
        return self.notebooks_dir / Path(notebook_name).with_suffix(".html").name

    @property
    def report_file(self) -> Path:
        return self.run_dir / "report.html"

    @property
    def figure3_file(self) -> Path:
        return self.figures_dir / "rationale_examples.html"

    def stage_dir(self, stage: str, round_index: int | None = None, arm: str | None = None) -> Path:
        """The folder a stage writes (created); round stages need ``round_index`` (1-based)."""
        return _mk(self.stage_path(stage, round_index, arm))

    def stage_path(self, stage: str, round_index: int | None = None, arm: str | None = None) -> Path:
        """Like :meth:`stage_dir`, without creating it: for reading and existence checks.

        ``arm``: the one stage an ablation arm runs itself, stage 05 of ``correction_only``
        (``<run>/correction_only/05_correction_sft``); None for the ARES rounds."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        if arm is not None:
            if (stage, arm) not in ARM_STEPS:
                raise ValueError(f"only stage {CORRECTION_SFT} runs for an arm ({CORRECTION_ONLY}), not {stage} for {arm!r}")
            return self.run_dir / arm / stage
        if stage in ROUND_STAGES:
            if round_index is None or round_index < 1:
                raise ValueError(f"stage {stage} runs once per round: give round_index >= 1")
            return self.run_dir / f"round_{round_index}" / stage
        return self.run_dir / stage

    def summary_file(self, stage: str, round_index: int | None = None, arm: str | None = None) -> Path:
        """A stage's ``summary.json``; a round stage without a round: the mirror of the latest."""
        if stage in ROUND_STAGES and round_index is None and arm is None:
            return self.run_dir / stage / "summary.json"
        return self.stage_path(stage, round_index, arm) / "summary.json"

    def launch_dir(self, stage: str, round_index: int | None = None, arm: str | None = None) -> Path:
        """A launched heavy step's parameters and result (``run.num_processes`` > 1; created)."""
        return _mk(self.stage_path(stage, round_index, arm) / "launch")

    def metrics_file(self, stage: str, round_index: int | None = None, arm: str | None = None) -> Path:
        """The training log (``metrics.jsonl``) of a stage that trains (02, 04, 05)."""
        return self.stage_path(stage, round_index, arm) / "metrics.jsonl"

    def rounds_present(self) -> list[int]:
        """The round indices that have a folder, in order."""
        found = [int(p.name.split("_", 1)[1]) for p in self.run_dir.glob("round_*") if p.name.split("_", 1)[1].isdigit()]
        return sorted(found)

    # ---- stage 01 ------------------------------------------------------------------------
    @property
    def dataset_dir(self) -> Path:
        return self.stage_path(DATA) / "dataset"

    def features_file(self, split: str) -> Path:
        return self.stage_path(DATA) / "features" / f"{split}.npy"

    @property
    def synthetic_raw_dir(self) -> Path:
        """The embedded synthetic dataset, written in ScienceQA's original layout."""
        return self.stage_path(DATA) / "synthetic_raw"

    @property
    def hub_images_dir(self) -> Path:
        return self.stage_path(DATA) / "hub_images"

    @property
    def vision_model_dir(self) -> Path:
        return self.stage_path(DATA) / "vision_model"

    @property
    def feature_cache_dir(self) -> Path:
        return self.stage_path(DATA) / "feature_cache"

    # ---- models and rationales along the pipeline ----------------------------------------
    @property
    def baseline_model_dir(self) -> Path:
        return self.stage_path(BASELINE) / "model"

    def rationales_file(self, model_name: str, split: str) -> Path:
        """Greedy rationales (JSONL, one row per qid) of ``baseline``, ``round_<i>``, ``correction_only``
        or ``rl_only`` (the round-1 PPO policy's, written by round 1's stage 05)."""
        if model_name == BASELINE_MODEL:
            return self.stage_path(BASELINE) / f"rationales_{split}.jsonl"
        if model_name == RL_ONLY:
            return self.rl_rationales_file(1, split)
        return self.run_dir / model_name / CORRECTION_SFT / f"rationales_{split}.jsonl"

    def rollouts_file(self, round_index: int) -> Path:
        """The sampled rationales of a round, kept so a re-run does not sample again."""
        return self.stage_path(TEACHER_SCORES, round_index) / "rollouts.jsonl"

    def rollout_shard_file(self, round_index: int, rank: int) -> Path:
        """What process ``rank`` sampled, batch by batch, until stage 03 merges it into rollouts.jsonl."""
        return self.stage_path(TEACHER_SCORES, round_index) / f"rollouts.rank{rank}.jsonl"

    def rollout_shard_files(self, round_index: int) -> list[Path]:
        """The shard files present, by rank."""
        found = self.stage_path(TEACHER_SCORES, round_index).glob("rollouts.rank*.jsonl")
        return sorted(found, key=lambda p: int(p.name[len("rollouts.rank"):-len(".jsonl")]))

    def samples_file(self, round_index: int) -> Path:
        return self.stage_path(TEACHER_SCORES, round_index) / "samples.parquet"

    def ppo_policy_dir(self, round_index: int) -> Path:
        return self.stage_path(PPO, round_index) / "policy"

    def ppo_value_dir(self, round_index: int) -> Path:
        return self.stage_path(PPO, round_index) / "value"

    def ppo_eval_file(self, round_index: int, when: str) -> Path:
        """Greedy held-out rationales and their Teacher scores ``before`` or ``after`` PPO."""
        if when not in ("before", "after"):
            raise ValueError(f"when must be 'before' or 'after', got {when!r}")
        return self.stage_path(PPO, round_index) / f"eval_{when}.json"

    def corrections_file(self, round_index: int, arm: str | None = None) -> Path:
        return self.stage_path(CORRECTION_SFT, round_index, arm) / "corrections.parquet"

    def rl_rationales_file(self, round_index: int, split: str, arm: str | None = None) -> Path:
        """The greedy rationales of the model stage 05 corrects (what the Teacher corrects, for train):
        the round's PPO policy, or the baseline for ``correction_only``."""
        return self.stage_path(CORRECTION_SFT, round_index, arm) / f"rl_rationales_{split}.jsonl"

    def before_rl_rationales_file(self, round_index: int, split: str, arm: str | None = None) -> Path:
        return self.stage_path(CORRECTION_SFT, round_index, arm) / f"before_rl_rationales_{split}.jsonl"

    def correction_inputs_file(self, round_index: int, arm: str | None = None) -> Path:
        """The fingerprint of the inputs stage 05's cached artefacts were made from."""
        return self.stage_path(CORRECTION_SFT, round_index, arm) / "inputs.json"

    def sft_model_dir(self, round_index: int, arm: str | None = None) -> Path:
        return self.stage_path(CORRECTION_SFT, round_index, arm) / "model"

    def model_to_correct(self, round_index: int, arm: str | None = None) -> Path:
        """What stage 05 corrects and fine-tunes: the round's PPO policy, or the baseline (``correction_only``)."""
        return self.baseline_model_dir if arm == CORRECTION_ONLY else self.ppo_policy_dir(round_index)

    def policy_entering_round(self, round_index: int) -> Path:
        """Round 1 starts from the baseline; round i > 1 from round i-1's corrected SFT model."""
        return self.baseline_model_dir if round_index == 1 else self.sft_model_dir(round_index - 1)

    def ares_model_dir(self, rounds: int) -> Path:
        """The final ARES model: the last round's corrected SFT model."""
        return self.sft_model_dir(rounds)

    def answer_dir(self, model_name: str, fmt: str) -> Path:
        """One LoRA answer head's folder: adapter/, metrics, checkpoints and its predictions."""
        return _mk(self.stage_path(ANSWER_LORA) / model_name / fmt)

    def predictions_file(self, model_name: str, fmt: str) -> Path:
        """One answer head's test predictions (JSONL, one row per test problem, ``correct`` among them)."""
        return self.stage_path(ANSWER_LORA) / model_name / fmt / "predictions_test.jsonl"

    def predictions_files(self) -> dict[tuple[str, str], Path]:
        """``{(model_name, format): file}`` of every answer head that has written its predictions."""
        found = sorted(self.stage_path(ANSWER_LORA).glob("*/*/predictions_test.jsonl"))
        return {(f.parent.parent.name, f.parent.name): f for f in found}

    @property
    def judgments_file(self) -> Path:
        """The judge's verdicts of ARES against the baseline (the headline)."""
        return self.stage_path(EVALUATION) / "judgments.jsonl"

    def comparison_judgments_file(self, subject: str, reference: str) -> Path:
        """The judge's verdicts of model ``subject`` against ``reference``; ARES vs the baseline is
        :attr:`judgments_file`."""
        if (subject, reference) == (ARES_MODEL, BASELINE_MODEL):
            return self.judgments_file
        return self.stage_path(EVALUATION) / f"judgments_{subject}_vs_{reference}.jsonl"

    def comparison_judgments_files(self) -> dict[tuple[str, str], Path]:
        """``{(subject, reference): file}`` of every comparison stage 07 has judged so far."""
        found = {(ARES_MODEL, BASELINE_MODEL): self.judgments_file} if self.judgments_file.exists() else {}
        for f in sorted(self.stage_path(EVALUATION).glob("judgments_*_vs_*.jsonl")):
            subject, _, reference = f.stem[len("judgments_"):].partition("_vs_")
            found[(subject, reference)] = f
        return found


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
