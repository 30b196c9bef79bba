"""Figures of a run, fit for a paper: titles and axes in words, legends outside the data, n and 95%
intervals on shares, values on bars. Every builder returns a ``matplotlib.figure.Figure`` (or None
when the run has nothing to plot yet) and is a function of the run's results
(:class:`aresnb.stages.results.RunResults`, read once by ``read_run``): no figure knows a run folder.

``FIGURES`` names each figure, the stage it belongs to, its title and caption (the report shows
them); ``write_stage_figures`` saves one stage's figures and ``write_all_figures`` every figure
the run has data for, as PNG and PDF in the folder they are given (a run's ``figures/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from matplotlib.figure import Figure

from aresnb.paths import ANSWER_LORA, BASELINE, CORRECTION_SFT, DATA, EVALUATION, PPO, TEACHER_SCORES
from aresnb.present.plots.results import (accuracy_figure, claims_figure, degeneration_figure, image_ablation_figure,
                                          win_rate_figure)
from aresnb.present.plots.style import save_figure
from aresnb.present.plots.teacher import teacher_scores_figure
from aresnb.present.plots.training import ppo_figure, sft_loss_figure
from aresnb.stages.results import RunResults

__all__ = ["FIGURES", "show", "test_counts", "accuracy_figure", "claims_figure", "degeneration_figure", "image_ablation_figure",
           "ppo_figure", "save_figure", "sft_loss_figure", "teacher_scores_figure", "win_rate_figure",
           "write_all_figures", "write_stage_figures"]


@dataclass(frozen=True)
class FigureSpec:
    stage: str
    title: str
    caption: str
    build: Callable[[RunResults], Figure | None]


def test_counts(run: RunResults) -> dict[str, int] | None:
    """Test problems per category (stage 01's counts; 'Avg' = all of them)."""
    counts = run.summary(DATA).get("categories", {}).get("test")
    return None if not counts else {**{k: v for k, v in counts.items() if k != "total"}, "Avg": counts["total"]}


def _win_rate(run: RunResults) -> Figure | None:
    table, ev = run.tables.get("win_rate"), run.summary(EVALUATION)
    return None if table is None else win_rate_figure(table, ev.get("paper_win_rate"), ev.get("judge_model", ""))


def _accuracy(run: RunResults) -> Figure | None:
    table = run.tables.get("accuracy")
    return None if table is None else accuracy_figure(table, test_counts(run))


FIGURES: dict[str, FigureSpec] = {
    "sft_loss": FigureSpec(
        BASELINE, "Supervised training loss",
        "Token cross-entropy of the baseline's SFT on the dataset's rationales and of each round's SFT on the "
        "Teacher's corrections, per optimizer step.", sft_loss_figure),
    "teacher_scores": FigureSpec(
        TEACHER_SCORES, "Teacher scores, sampled and held out",
        "Left: the Teacher's score of every sentence of the rationales sampled for PPO. Right: each held-out "
        "(val) problem's score before and after PPO, one line per problem, with the mean and its 95% bootstrap "
        "interval; the change carries the paired interval.", teacher_scores_figure),
    "ppo_training": FigureSpec(
        PPO, "PPO, optimizer step by step",
        "Per optimizer step over the round's buffer: the Teacher score of the step's sequences (sampled before "
        "training, so not a measure of progress) with the held-out score before and after PPO, the KL to the "
        "reference, the share of clipped ratios and the losses.", ppo_figure),
    "degeneration": FigureSpec(
        CORRECTION_SFT, "What RL breaks and SFT on corrections repairs",
        "Repetition and unfinished-sentence rates of greedy val rationales of the model entering the round "
        "(before RL), the PPO policy (after RL) and the model after SFT on the Teacher's corrections.",
        lambda run: degeneration_figure(run.summary(CORRECTION_SFT).get("val_rates"))),
    "accuracy_by_category": FigureSpec(
        ANSWER_LORA, "Answer accuracy by category",
        "LoRA answer heads of the baseline and of ARES on the test split, by ScienceQA category; error bars are "
        "95% Wilson intervals over the n test problems of each category.", _accuracy),
    "image_ablation": FigureSpec(
        ANSWER_LORA, "Image ablation",
        "The same answer head trained and tested with the image features zeroed: what the answers owe to the "
        "image; 95% Wilson intervals.",
        lambda run: image_ablation_figure(run.summary(ANSWER_LORA).get("image_ablation"), test_counts(run))),
    "win_rate": FigureSpec(
        EVALUATION, "Win rate of ARES over the baseline",
        "Left: the share of test problems whose rationale the judge prefers from ARES, asked once in a seeded "
        "random order (the paper's protocol), per category with n and a 95% bootstrap interval. Right: asked in "
        "both orders, a win needs ARES preferred in both.", _win_rate),
    "claims": FigureSpec(
        EVALUATION, "What the rationales claim",
        "Sentences of the test rationales checked against what each synthetic problem's image and hint hold.",
        lambda run: claims_figure(run.summary(EVALUATION).get("claims"))),
}


def show(*figures: Figure | None) -> None:
    """Display figures in a notebook as PNG (whatever matplotlib backend the kernel has)."""
    import io

    from IPython.display import Image, display  # deferred: needs IPython, i.e. a kernel

    for fig in figures:
        if fig is not None:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            display(Image(data=buf.getvalue(), format="png"))


def write_stage_figures(run: RunResults, stage: str, folder: Path) -> dict[str, dict[str, str]]:
    """The figures of one stage the run has data for, as PNG and PDF in ``folder``; {name: {png, pdf}}."""
    out = {}
    for name, spec in FIGURES.items():
        if spec.stage == stage:
            fig = spec.build(run)
            if fig is not None:
                out[name] = save_figure(fig, folder, name)
    return out


def write_all_figures(run: RunResults, folder: Path) -> dict[str, dict[str, str]]:
    """Every figure the run has data for, as PNG and PDF in ``folder``; {name: {png, pdf}}."""
    out = {}
    for stage in dict.fromkeys(spec.stage for spec in FIGURES.values()):
        out.update(write_stage_figures(run, stage, folder))
    return out
