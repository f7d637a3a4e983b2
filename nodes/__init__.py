"""ComfyUI glue: the node schemas (one file per group of nodes, sharing types.py) and runtime/, what they run."""
