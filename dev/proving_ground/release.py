"""What a build vouches for and when it ships: its files' digests, issue 18's target, and ``commit`` (the build of
the full recipe copied into the repository's model folder, only when it meets the target)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from personalvideo.training.atomic import write_atomic

from dev.proving_ground import recipe as recipes
from dev.proving_ground.recipe import MODEL_FILE, VAE_FILE, Recipe


def file_digests(folder: Path) -> dict:
    """sha256 and size of the two weight files (what the manifest vouches for)."""
    out = {}
    for name in (MODEL_FILE, VAE_FILE):
        data = (folder / name).read_bytes()
        out[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return out


def meets_target(numbers: dict) -> bool:
    """Issue 18's bar for committing a build: faces in >= 60 % of generated frames and >= 80 % of the saved VAE's
    own round-trip rate; motion as prompted in >= 60 % of the clips with faces."""
    faces = numbers["face_detection_rate"]
    return (faces >= recipes.TARGET_FACE_RATE
            and faces >= recipes.TARGET_OF_ROUNDTRIP * numbers["vae_roundtrip"]["faces_recon"]
            and numbers["motion_follows_with_faces"] >= recipes.TARGET_MOTION)


SAMPLES_PREVIEW = "samples.jpg"  # the build's samples.png at half size (the PNG of 48 clips is about 9 MB)


def _write_preview(png: Path, out: Path) -> None:
    from PIL import Image

    with Image.open(png) as im:
        small = im.convert("RGB").resize((im.width // 2, im.height // 2), Image.LANCZOS)
    write_atomic(out, lambda tmp: small.save(tmp, format="JPEG", quality=85))


def commit(recipe: Recipe = recipes.FULL, say=print) -> Path:
    """Copy the complete build of ``recipe`` (weights, manifest, a preview of its samples) into the repository's
    model folder; refuses a build that misses the target."""
    if recipe != recipes.FULL:
        raise SystemExit("--commit: only the full recipe (recipe.FULL) is committed; change FULL, then build it")
    folder = recipes.cached(recipe)
    if folder is None:
        raise SystemExit(f"--commit: no complete build of recipe {recipe.digest()} in {recipes.cache_root()}; "
                         "build it first (same command without --commit)")
    manifest = recipes.read_manifest(folder)
    if not manifest.get("meets_target"):
        raise SystemExit(f"--commit: the build in {folder} misses the target (faces "
                         f"{manifest['face_detection_rate']:.0%}, motion {manifest['motion_follows_with_faces']:.0%}); "
                         "not committing it")
    out = recipes.COMMITTED
    out.mkdir(parents=True, exist_ok=True)
    _write_preview(folder / "samples.png", out / SAMPLES_PREVIEW)
    for name in (MODEL_FILE, VAE_FILE, recipes.MANIFEST):  # the manifest last
        write_atomic(out / name, lambda tmp: shutil.copyfile(folder / name, tmp))
    say(f"committed build {recipe.digest()} to {out}")
    return out
