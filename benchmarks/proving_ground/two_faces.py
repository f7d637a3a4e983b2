"""Can the proving-ground model draw two people? (issue 22: routed adapters need a model that draws two faces.)

Samples wide and tall clips (256 x 128 and 128 x 256, twice the trained frame's area) with the motion prompts, in
real ComfyUI through core nodes, and counts the faces SCRFD (threshold 0.5) finds in each frame.

    .venv/bin/python -m benchmarks.proving_ground.two_faces --clips 8 [--folder BUILD_FOLDER]

Prints the counts per size and one JSON line with the per-frame counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dev.proving_ground import recipe as recipes

SIZES = ((256, 128), (128, 256))


def count_faces(rt, folder: Path, clips: int) -> dict[str, list[list[int]]]:
    """Faces per frame of ``clips`` clips of each size sampled from the build in ``folder``, by size."""
    from dev.proving_ground import sampling
    from dev.proving_ground.clips import MOTIONS, prompt_for
    from dev.proving_ground.faces import detector

    recipe = recipes.Recipe(**recipes.read_manifest(folder)["recipe"])
    sampling.register(folder)
    g = sampling.Graph()
    model, vae = sampling.loaders(g, recipe)
    keys = []
    for i in range(clips):
        for width, height in SIZES:
            clip = sampling.sample(g, model, vae, recipe, prompt_for(MOTIONS[i % len(MOTIONS)]), seed=2000 + i,
                                   size=(width, height))
            key = f"two_faces_{i}_{width}x{height}"
            sampling.capture(g, clip, key)
            keys.append((key, f"{width}x{height}"))
    rt.run(g.nodes)
    det = detector()
    counts: dict[str, list[list[int]]] = {}
    for key, size in keys:
        frames = rt.captured()[key].float()
        counts.setdefault(size, []).append(
            [len(det.detect((f.clamp(0, 1) * 255).round().byte().numpy(), 0.5)) for f in frames])
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8, help="clips per size (prompts cycle through the motions)")
    parser.add_argument("--folder", type=Path, help="a build folder (default: the committed or cached model)")
    parser.add_argument("--comfy-base", type=Path, default=recipes.cache_root() / "comfy_two_faces")
    args = parser.parse_args()
    folder = args.folder or recipes.model_folder()
    if folder is None:
        raise SystemExit("no proving-ground model: build it with python -m dev.proving_ground.build_model, or pass "
                         "--folder")
    recipes.set_threads()
    from dev.comfy_runtime import ComfyRuntime

    counts = count_faces(ComfyRuntime.boot(args.comfy_base), folder, args.clips)
    for size, clips in counts.items():
        flat = [c for clip in clips for c in clip]
        print(f"{size}: frames with two or more faces {sum(c >= 2 for c in flat)}, with one "
              f"{sum(c == 1 for c in flat)}, of {len(flat)} ({folder.name})")
    print(json.dumps({"folder": str(folder), "counts": counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
