"""Rationales as text: where sentences end (aresnb's rules and the paper's on T5 token ids)
and the rationale metrics (repetition, unfinished sentences, de-duplication)."""
