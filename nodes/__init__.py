"""Thin ComfyUI glue over training/: schemas, model folders, patcher plumbing."""
