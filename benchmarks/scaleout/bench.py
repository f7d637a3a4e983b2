"""The scale-out trainer on this machine: 1 vs 2 processes (time per optimiser step per sample), and one rank's
memory with and without FSDP2 sharding of the base model.

    .venv/bin/python -m benchmarks.scaleout.bench [--steps 4] [--layers 8] [--dim-heads 8] [--runs 2proc,2proc_fsdp]

Three runs of the real command path (scaleout.run.train_all from a TOML config, launched with torchrun on the
CPU, gloo): 1 process, 2 processes, 2 processes with ``[compute] fsdp = true``. The model is the tiny random
diffusers Wan (scaleout/tiny.py) made "medium" with ``tiny_options`` (dim 128·heads, ffn 4·dim, ``--layers``
blocks); the real SCRFD + w600k_mbf ArcFace at detector threshold 0.05 (a random model draws no faces; see
tests/scaleout/test_cli_train.py). Each rank records the time of every step's end (the trainer's on_step); the
first step is a warm-up and left out. Every process computes on one thread (OMP_NUM_THREADS=1). Memory of
each rank: the bytes of the base model's parameters it holds (exact: the local shards of FSDP2's DTensors), its
resident set right after the build (with FSDP2 the build includes the sharded load) and at the first step's end,
its peak resident set (VmHWM) at the end of the build (the load-time peak) and over the run, from
/proc/self/status (the CPU has no torch allocator statistics), with glibc set to return freed memory at once.
``--runs`` picks some of the three runs (names 1proc, 2proc, 2proc_fsdp).
A step whose reward frames show no face on a rank skips that rank's backward (FSDP: a zero backward), counted
per rank ("own_steps_skipped_per_rank"); a shorter step, so the times depend on how many there were.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNS = (("1proc", 1, False), ("2proc", 2, False), ("2proc_fsdp", 2, True))  # name, processes, fsdp

TOML = """
[train]
steps = {steps}
learning_rate = 1e-3
rank = 16
alpha = 16.0
sampling_steps = 8
cfg = 3.0
frames_per_reward = 2
save_every = 0
scr_weight = 0.0

[model]
family = "wan"
tiny = true
width = 64
height = 64
num_frames = 9
negative_prompt = "blurry"
tiny_options = {{ num_attention_heads = {heads}, ffn_dim = {ffn}, num_layers = {layers} }}

[rewards]
insightface_pack = "pack"
det_size = 160
det_threshold = 0.05
augmentations = 0

[prompts]
subject = "a man"

[[identities]]
name = "bench"
photos = ["obama.jpg"]

[output]
folder = "out_{name}"
resume = false

[compute]
cpu = true
fsdp = {fsdp}
"""


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child(config_path: str, out: str) -> None:
    """One rank: train from the config, recording step times and memory."""
    import torch

    from personalvideo.scaleout import run as cli
    from personalvideo.scaleout.backends import build_backend
    from personalvideo.scaleout.config import load_config
    from personalvideo.scaleout.distributed import init_distributed

    config = load_config(config_path)
    run = init_distributed(cpu=True)
    record = {"rank": run.rank, "world_size": run.world_size, "step_end": [], "own_step_skipped": []}
    models = []

    def capturing_build(*args):
        models.append(build_backend(*args))
        record["rss_built_mb"] = status_kb("VmRSS") / 1024  # FSDP2: after the sharded load
        record["peak_built_mb"] = status_kb("VmHWM") / 1024  # the load-time peak
        return models[-1]

    def on_step(bar, rec, preview):
        record["step_end"].append(time.perf_counter())
        if len(record["step_end"]) == 1:
            local = [p.to_local() if hasattr(p, "to_local") else p for p in models[0].transformer.parameters()]
            record["param_mb"] = sum(t.numel() * t.element_size() for t in local) / 2**20
            record["rss_mb"] = status_kb("VmRSS") / 1024

    reduce = run.reduce_gradients

    def recording_reduce(params, skipped):  # this rank's own verdict, before the ranks pool their gradients
        record["own_step_skipped"].append(skipped)
        return reduce(params, skipped)

    run.reduce_gradients = recording_reduce
    cli.ProgressBar.__call__ = on_step  # the benchmark's hooks: the trainer's on_step (no bar) and the reduction
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cli.train_all(config, run, build_backend=capturing_build)
    record["peak_rss_mb"] = status_kb("VmHWM") / 1024
    Path(out, f"rank{run.rank}.json").write_text(json.dumps(record))


def launch(work: Path, name: str, procs: int, fsdp: bool, args) -> list[dict]:
    heads = args.dim_heads
    config = work / f"{name}.toml"
    config.write_text(TOML.format(steps=args.steps, heads=heads, ffn=4 * 128 * heads, layers=args.layers,
                                  name=name, fsdp=str(fsdp).lower()))
    out = work / f"result_{name}"
    out.mkdir()
    threads = "1"  # one core per process, as one GPU per process: what data parallel adds is processes
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           "-m", "benchmarks.scaleout.bench", "child", str(config), str(out)]
    # glibc returns freed memory to the OS at once, so the resident set follows the live tensors
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(procs)]


def summarise(name: str, ranks: list[dict]) -> dict:
    ends = ranks[0]["step_end"]
    per_step = statistics.median(b - a for a, b in zip(ends[:-1], ends[1:]))  # steps after the warm-up
    memory = {f"{key}_per_rank": [round(r[key], 1) for r in ranks]
              for key in ("param_mb", "rss_built_mb", "peak_built_mb", "rss_mb", "peak_rss_mb")}
    return {"run": name, "processes": len(ranks), "s_per_step": per_step, "s_per_sample": per_step / len(ranks),
            **memory, "own_steps_skipped_per_rank": [sum(bool(s) for s in r["own_step_skipped"]) for r in ranks]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        return child(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4, help="steps per run (the first is a warm-up)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--dim-heads", type=int, default=8, help="heads of 128 channels: dim = 128 x heads")
    parser.add_argument("--runs", default="1proc,2proc,2proc_fsdp", help="comma-separated: which runs")
    args = parser.parse_args()
    runs = [r for r in RUNS if r[0] in args.runs.split(",")]
    from dev.face_assets import make_pack, photo_path

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_pack(work, "pack")
        shutil.copy(photo_path("obama.jpg"), work / "obama.jpg")
        rows = {name: summarise(name, launch(work, name, procs, fsdp, args)) for name, procs, fsdp in runs}
    for row in rows.values():
        print(json.dumps(row))
    if "1proc" in rows and "2proc" in rows:
        print(json.dumps({"time_per_sample_ratio_2proc_over_1proc":
                          rows["2proc"]["s_per_sample"] / rows["1proc"]["s_per_sample"]}))
    if "2proc" in rows and "2proc_fsdp" in rows:
        print(json.dumps({"param_mb_ratio_fsdp_over_plain_rank0":
                          rows["2proc_fsdp"]["param_mb_per_rank"][0] / rows["2proc"]["param_mb_per_rank"][0]}))


if __name__ == "__main__":
    main()
