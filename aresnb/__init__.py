"""aresnb: ARES (Alternating Reinforcement Learning and Supervised Fine-Tuning with an AI Teacher)
for multimodal chain-of-thought, as a reproducible notebook collection."""

__version__ = "0.1.0"
