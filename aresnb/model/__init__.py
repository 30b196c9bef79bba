"""The rationale model and what runs it: the multimodal T5, MM-CoT's checkpoints, tokenizer,
generation, devices and launches, checkpoints, the optimizer rule, trackers, the LoRA answer head."""
