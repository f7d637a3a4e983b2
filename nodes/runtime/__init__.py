"""What the nodes run inside ComfyUI: the gate on the model patcher, the trainer's view of MODEL / CLIP / VAE (the
Backend of training/loop/trainer.py) and what a training run needs from ComfyUI's machinery (attention, fp8 and
weight paths, memory, the VAE walk, the Wan 2.2 experts). The node schemas (nodes/*_nodes.py) call these; nothing
here defines a node, and the method's rules stay in training/."""
