"""The models a run evaluates and the comparisons its judge makes (stages 06 and 07).

Always the baseline (stage 02) and ARES (the last round's corrected SFT model); then the ablation
arms ``ares.arms`` asks for, each a model the pipeline already builds or builds for it:

    rl_only          the round-1 PPO policy as the final model (RL without the correction SFT)
    correction_only  stage 05 on the baseline (its own rationales corrected, the same SFT, no RL)
    round_<i>        ARES after round i < ares.rounds (``every_round``)

The judge compares every model with the baseline, and each ARES model with ``correction_only``:
the comparison that says what the RL adds to the label cleaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aresnb.config import Config
from aresnb.model.multimodal_t5 import model_dir_has_weights
from aresnb.paths import (ARES_MODEL, BASELINE_MODEL, CORRECTION_ONLY, EVERY_ROUND, RL_ONLY, RunPaths,
                          round_model)
from aresnb.progress import say

DESCRIPTIONS = {
    BASELINE_MODEL: "the baseline (stage 02: SFT on the gold rationales)",
    RL_ONLY: "RL only: the round-1 PPO policy, no correction SFT",
    CORRECTION_ONLY: "correction SFT only: the baseline fine-tuned on the Teacher's corrections of its own "
                     "rationales, no RL",
    ARES_MODEL: "ARES: RL then correction SFT, every round",
}


@dataclass(frozen=True)
class EvaluatedModel:
    """One model of the run that stages 06 and 07 evaluate."""

    name: str  # baseline | rl_only | correction_only | round_<i> | ares
    model_dir: Path
    rationale_name: str  # whose greedy rationales (``paths.rationales_file(rationale_name, split)``)
    description: str


def model_names(cfg: Config) -> list[str]:
    """The names of the models the run evaluates, in display order: the baseline, the arms, ARES."""
    names = [BASELINE_MODEL] + [a for a in (RL_ONLY, CORRECTION_ONLY) if a in cfg.ares.arms]
    if EVERY_ROUND in cfg.ares.arms:
        names += [round_model(i) for i in range(1, cfg.ares.rounds)]
    return names + [ARES_MODEL]


def rationale_name(name: str, rounds: int) -> str:
    """Whose rationale files hold model ``name``'s rationales (``paths.rationales_file``): ARES's are
    the last round's."""
    return round_model(rounds) if name == ARES_MODEL else name


def evaluated_models(cfg: Config, paths: RunPaths) -> dict[str, EvaluatedModel]:
    """{name: model} in display order (:func:`model_names`). A requested arm whose model is missing
    is an error; ARES missing (its rounds not run yet) is left out with a warning line."""
    rounds = cfg.ares.rounds
    found = {BASELINE_MODEL: EvaluatedModel(BASELINE_MODEL, paths.baseline_model_dir, BASELINE_MODEL,
                                            DESCRIPTIONS[BASELINE_MODEL])}
    if RL_ONLY in cfg.ares.arms:
        found[RL_ONLY] = EvaluatedModel(RL_ONLY, paths.ppo_policy_dir(1), RL_ONLY, DESCRIPTIONS[RL_ONLY])
    if CORRECTION_ONLY in cfg.ares.arms:
        found[CORRECTION_ONLY] = EvaluatedModel(CORRECTION_ONLY, paths.sft_model_dir(1, CORRECTION_ONLY),
                                                CORRECTION_ONLY, DESCRIPTIONS[CORRECTION_ONLY])
    if EVERY_ROUND in cfg.ares.arms:
        for i in range(1, rounds):
            found[round_model(i)] = EvaluatedModel(round_model(i), paths.sft_model_dir(i), round_model(i),
                                                   f"ARES after round {i} of {rounds}")
    for m in found.values():
        if not model_dir_has_weights(m.model_dir):
            raise FileNotFoundError(f"no saved model for {m.name} at {m.model_dir}: run the stage that builds it "
                                    f"({'02' if m.name == BASELINE_MODEL else '04' if m.name == RL_ONLY else '05'}) first")
    ares_dir = paths.ares_model_dir(rounds)
    if model_dir_has_weights(ares_dir):
        found[ARES_MODEL] = EvaluatedModel(ARES_MODEL, ares_dir, round_model(rounds),
                                           DESCRIPTIONS[ARES_MODEL] + f" ({rounds} round{'s' * (rounds > 1)})")
    else:
        say(f"WARNING: no ARES model at {ares_dir} (round {rounds} has not finished): only the other models "
            "are evaluated")
    return found


def comparisons(names: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(subject, reference) pairs the judge compares: ARES vs the baseline first (the headline),
    every other model vs the baseline, then each ARES model (final and per round) vs correction_only."""
    out = [(ARES_MODEL, BASELINE_MODEL)] if ARES_MODEL in names else []
    out += [(n, BASELINE_MODEL) for n in names if n not in (BASELINE_MODEL, ARES_MODEL)]
    if CORRECTION_ONLY in names:
        out += [(n, CORRECTION_ONLY) for n in sorted(names, key=lambda n: n != ARES_MODEL)
                if n == ARES_MODEL or n.startswith("round_")]
    return out


def comparison_name(subject: str, reference: str) -> str:
    """The key of a comparison in summaries and tables: ``<subject>_vs_<reference>``."""
    return f"{subject}_vs_{reference}"
