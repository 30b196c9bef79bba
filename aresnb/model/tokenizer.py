"""The rationale model's tokenizer: trained locally with `tokenizers`, or loaded from a dir / hub id.

A locally trained tokenizer is byte-level BPE with T5's special tokens in T5's places
(``<pad>`` = 0, also the decoder start; ``</s>`` = 1, appended to every sequence; ``<unk>`` = 2),
so the same model code serves it and the real Flan-T5 tokenizer. Both are fast tokenizers:
``return_offsets_mapping=True`` works, which sentence-to-token alignment relies on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from aresnb.config.sections import Config

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on ``texts`` with T5-style special tokens; deterministic for the same texts."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    eos_id = tok.token_to_id("</s>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),  # offsets cover the word, not its leading space
        processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained`` with a clear message when a hub id cannot be reached."""
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except OSError as e:
        raise OSError(
            f"cannot load a tokenizer from {str(path)!r}: {e}. Give a local directory (e.g. "
            "../shared/tokenizers/flan-t5) or 'train' to train one on the training text."
        ) from e
    check_tokenizer(tok, str(path))
    return tok


def check_tokenizer(tok: PreTrainedTokenizerBase, where: str) -> None:
    """What the seq2seq code relies on: a fast tokenizer with pad and eos tokens."""
    if not tok.is_fast:
        raise ValueError(f"{where}: a fast tokenizer is required (offset mappings align sentences to tokens)")
    if tok.pad_token_id is None or tok.eos_token_id is None:
        raise ValueError(f"{where}: the tokenizer needs pad and eos tokens (T5-style: <pad>=0, </s>=1)")


def build_or_load_tokenizer(cfg: Config, texts: Iterable[str] | None, out_dir: str | Path) -> PreTrainedTokenizerBase:
    """``model.tokenizer == 'train'``: train on ``texts`` and save to ``out_dir``; else load it.

    The returned tokenizer is always the one reloaded from disk, so what trains the model is
    exactly what later stages load from the model directory.
    """
    out_dir = Path(out_dir)
    if cfg.model.tokenizer == "train":
        if texts is None:
            raise ValueError("model.tokenizer='train' needs the training texts")
        train_bpe_tokenizer(texts, cfg.model.vocab_size).save_pretrained(out_dir)
        return load_tokenizer(out_dir)
    tok = load_tokenizer(cfg.model.tokenizer)
    tok.save_pretrained(out_dir)
    return tok
