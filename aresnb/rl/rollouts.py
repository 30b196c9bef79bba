"""A round's rollouts: where their sentences end, how sampled batches are kept, and PPO's samples.

Stage 03 samples k rationales per problem, batch by batch, on one or more processes; each process
appends whole batches to its shard file, whose first line is the fingerprint of the rollouts it
belongs to. This module knows those files' format (never where they lie: the stage passes the
paths), the sentence layout of a sampled row (what the Teacher scores and where PPO puts each
reward), and how a row of ``samples.parquet`` becomes a :class:`aresnb.rl.ppo_buffer.PPOSample`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from aresnb.data.prompts import build_source, solution_start
from aresnb.io import read_jsonl, write_jsonl
from aresnb.rl.ppo_buffer import PPOSample
from aresnb.text.paper_sentences import paper_sentences
from aresnb.text.sentences import sentence_end_tokens, split_sentences

SOURCE_FORMAT = "QCM-E"  # what the rationale model reads: question, context, options -> explanation


# ---- sentences of a sampled row ----------------------------------------------------------------


def sentence_layout(tokenizer: Any, row: dict, rules: str = "aresnb") -> dict:
    """The rationale's sentences, their character spans and the token that ends each one, under
    ``rules`` (teacher.sentence_rules)."""
    text = tokenizer.decode(row["response_ids"], skip_special_tokens=True)
    if rules == "paper":
        spans, ends = paper_sentences(tokenizer, row["response_ids"], solution_start(text))
    else:
        spans = split_sentences(row["rationale"])
        ends = sentence_end_tokens(tokenizer, row["response_ids"], spans, solution_start(text))
    return {"sentences": [x.text for x in spans], "sentence_spans": [[x.start, x.end] for x in spans],
            "sentence_end_tokens": ends}


# ---- batches kept across a kill ----------------------------------------------------------------


def rows_per_batch(n_problems: int, batch_size: int, samples_per_problem: int) -> list[int]:
    """How many rows each length-sorted batch of the round holds (problems x samples)."""
    return [min(batch_size, n_problems - start) * samples_per_problem for start in range(0, n_problems, batch_size)]


def complete_batches(rows: list[dict], expected: list[int]) -> dict[int, list[dict]]:
    """{batch: its rows} for the batches of one file that have all their rows (a kill mid-write
    leaves the last one short)."""
    by_batch: dict[int, list[dict]] = {}
    for row in rows:
        by_batch.setdefault(int(row["batch"]), []).append(row)
    return {b: r for b, r in by_batch.items() if len(r) == expected[b]}


def read_rollouts(path: Path, fp: str) -> list[dict]:
    """The rows of a rollouts file written for ``fp`` (none when it was written for other rollouts)."""
    lines = read_jsonl(path, tolerate_partial_last_line=True)
    return lines[1:] if lines and lines[0].get("fingerprint") == fp else []


def merge_rollouts(main_file: Path, shards: Sequence[Path], fp: str, expected: list[int]) -> list[dict]:
    """Every complete batch kept so far (``main_file`` and the processes' ``shards``), in batch
    order; written back to ``main_file`` when a shard added to it, and the shards removed."""
    batches: dict[int, list[dict]] = {}
    for file in (main_file, *shards):
        for b, rows in complete_batches(read_rollouts(file, fp), expected).items():
            batches.setdefault(b, rows)
    kept = [row for b in sorted(batches) for row in batches[b]]
    if shards or not main_file.exists():
        write_jsonl(main_file, [{"fingerprint": fp}, *kept])
        for file in shards:
            file.unlink()
    return kept


class ShardTail:
    """Reads the processes' shard files as they grow: each complete batch once, in the order finished.
    ``shard_files()`` lists them (a process creates its file when it starts)."""

    def __init__(self, shard_files: Callable[[], list[Path]], fp: str, expected: list[int]):
        self.shard_files, self.fp, self.expected = shard_files, fp, expected
        self.offsets: dict[Path, int] = {}
        self.partial: dict[int, list[dict]] = {}
        self.seen: set[int] = set()

    def new_batches(self) -> list[list[dict]]:
        done = []
        for file in self.shard_files():
            with open(file, "rb") as f:
                f.seek(self.offsets.get(file, 0))
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # only whole lines: the writer may be mid-line
            if not end:
                continue
            first = file not in self.offsets
            self.offsets[file] = self.offsets.get(file, 0) + end
            lines = [json.loads(x) for x in chunk[:end].splitlines() if x.strip()]
            if first:
                if not lines or lines[0].get("fingerprint") != self.fp:
                    raise RuntimeError(f"{file} was not written for these rollouts")
                lines = lines[1:]
            for row in lines:
                b = int(row["batch"])
                self.partial.setdefault(b, []).append(row)
                if len(self.partial[b]) == self.expected[b]:
                    self.seen.add(b)
                    done.append(self.partial.pop(b))
        return done


# ---- samples.parquet rows -> PPO samples -------------------------------------------------------


def build_ppo_samples(rows: Sequence[dict], problems: Any, tokenizer: Any, max_source_length: int,
                      use_caption: bool = True) -> tuple[list[PPOSample], dict]:
    """A PPOSample per row of samples.parquet (dropped replies kept, flagged) and counts.

    The response is the token ids as sampled; only the source is tokenized here.
    """
    row_of_qid = {q: i for i, q in enumerate(problems["qid"])}
    out, reasons, source_ids_of = [], {}, {}
    for r in rows:
        qid = str(r["qid"])
        if qid not in row_of_qid:
            raise KeyError(f"samples.parquet: qid {qid} is not in the train split of the dataset")
        scores = None if r["scores"] is None else [float(x) for x in r["scores"]]
        ends = [int(t) for t in r["sentence_end_tokens"]]
        reason = None
        if bool(r["dropped"]) or scores is None:
            reason = str(r.get("drop_reason"))
        elif len(scores) != len(ends):
            reason = "span_mismatch"  # a Teacher reply for other sentences than were sampled
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) + 1
        if qid not in source_ids_of:  # the k samples of a problem share its source: tokenised once
            source = build_source(problems[row_of_qid[qid]], SOURCE_FORMAT, use_caption=use_caption)
            source_ids_of[qid] = tokenizer(source, truncation=True, max_length=max_source_length)["input_ids"]
        source_ids = source_ids_of[qid]
        out.append(PPOSample(qid=qid, sample_index=int(r["sample_index"]), source_ids=list(source_ids),
                             response_ids=[int(t) for t in r["response_ids"]], sentence_end_indices=ends,
                             scores=scores, ended=bool(r["ended"]), dropped=reason is not None,
                             feature_row=row_of_qid[qid], text=str(r["rationale"] or ""),
                             sample_logprobs=[float(x) for x in r["sample_logprobs"]]
                             if r.get("sample_logprobs") is not None else None))
    return out, {"samples_total": len(rows), "samples_dropped": sum(reasons.values()), "drop_reasons": reasons,
                 "cut_samples": sum(not s.ended for s in out)}
