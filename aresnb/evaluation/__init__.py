"""Evaluation, as pure functions of texts, verdicts and predictions: win rates (``winrate``),
answer accuracy (``accuracy``), BLEU / ROUGE-L / similarity against gold (``text_metrics``),
tables on disk (``tables``). Stage 07 (:mod:`aresnb.stages.evaluation`) puts them together."""
