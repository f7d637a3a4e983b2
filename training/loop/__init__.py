"""The training loop: the gated rollout (source and tuned runs), the trainer, and what keeps backward correct
and small (checkpointing of model calls and blocks, in-place safety)."""
