"""The identity reward (ICR): detect (SCRFD) -> align (differentiable 5-point warp) -> ArcFace (torch) -> reward,
and the reference identity the reward compares with."""
