"""Supervised fine-tuning: the one trainer (baseline, SFT on corrections, LoRA heads), its
examples, and what the Teacher's corrections become as SFT targets."""
