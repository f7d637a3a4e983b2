"""The standalone scale-out trainer: PersonalVideo's training core (``training/``) on diffusers + peft models,
data-parallel and sharded with torch.distributed / accelerate. The node pack never imports this package."""
