"""The scale-out trainer's command: train one identity adapter per identity of a TOML config (scaleout/config.py).

Run after ``pip install '.[train]'`` (the package with the scale-out trainer's dependencies)::

    python -m personalvideo.scaleout.train CONFIG.toml                            # one process
    torchrun --nproc_per_node N -m personalvideo.scaleout.train CONFIG.toml       # N GPUs of one machine
    accelerate launch --multi_gpu --num_processes N -m personalvideo.scaleout.train CONFIG.toml   # the same

On CPUs (no GPU), with ``[compute] cpu = true`` (gloo): ``torchrun --standalone --nproc_per_node 2 -m
personalvideo.scaleout.train CONFIG.toml`` (tests/scaleout/test_cli_train.py) or ``accelerate launch --multi_gpu
--num_processes 2 -m personalvideo.scaleout.train CONFIG.toml`` (checked by hand: the same adapter). ``accelerate
launch --cpu --num_processes 2`` starts only ONE process (it wants an MPI hostfile). The GPU commands (NCCL) could
not be run here (no GPU).

The config is read and checked (every path, the model folder's layout) before anything heavy loads. Log lines go to
stderr (rank 0's; other ranks only warnings), and the run ends with where each file was written. Per identity, in
``<output folder>/<name>/``: the adapter ``<name>.safetensors`` (a ComfyUI LoRA), ``resume.safetensors``,
``training_curve.png`` and ``summary.txt`` (scaleout/run.py). Rerunning the same command continues from the resume
files. Exit codes: 0 done; 2 unusable input (the config, a path, a photo, a resume file of other settings: one line
saying which and what to do; ``--debug`` shows the traceback); 3 trained, but no step updated some identity's
adapter (a warning says why); 1 anything else (a traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

PROG = "python -m personalvideo.scaleout.train"
EXIT_BAD_INPUT, EXIT_NOT_TRAINED = 2, 3
log = logging.getLogger("personalvideo.scaleout.train")


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                     epilog="Config fields: scaleout/config.py; examples: examples/scaleout/*.toml.")
    parser.add_argument("config", help="the TOML configuration (relative paths in it are relative to its folder)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error too")
    return parser.parse_args(argv)  # before any heavy import: --help and usage errors answer at once


def log_to_stderr(rank: int) -> None:
    """The pack's log lines (logger ``personalvideo``, training/logs.py), rank-tagged, on stderr: INFO on rank 0,
    warnings on the others. The root logger's configuration is left alone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s %(name)s: %(message)s"))
    handler.name = "personalvideo.scaleout.train"
    logger = logging.getLogger("personalvideo")
    for old in [h for h in logger.handlers if h.name == handler.name]:  # main() run twice in one process
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def report(results: dict, folders: dict) -> int:
    """Where each identity's files went; a warning, and EXIT_NOT_TRAINED, for an identity no step trained."""
    from .run import updated_steps, written_files

    untrained = []
    for name, result in results.items():
        for what, path in written_files(folders[name], name).items():
            log.info("%s: %s written to %s", name, what, path)
        if updated_steps(result) == 0:
            reasons = sorted({r.skipped for r in result.history if r.skipped})
            log.warning("%s: no step of %d updated the adapter (%s), so its file is the untrained adapter. With no "
                        "face found: check the photos' faces and the model's frame size, or lower [rewards] "
                        "det_threshold; [rewards] hpsv2 adds the semantic reward", name, len(result.history),
                        "; ".join(reasons) or "no steps")
            untrained.append(name)
    return EXIT_NOT_TRAINED if untrained else 0


def train(config) -> int:
    from .distributed import init_distributed
    from .run import train_all

    run = init_distributed(cpu=config.compute.cpu)
    log_to_stderr(run.rank)
    results = train_all(config, run)
    return report(results, {i.name: config.output.folder / i.name for i in config.identities}) if run.is_main else 0


def input_error(error: Exception, say: bool) -> int:
    """An input error as one line on stderr (``say``: this rank says it), and EXIT_BAD_INPUT."""
    if say:
        rank = os.environ.get("RANK", "0")
        tag = "" if os.environ.get("WORLD_SIZE", "1") == "1" else f"[rank {rank}] "
        print(f"{tag}{PROG}: error: {error}\n(--debug shows the traceback)", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The pack's input errors are ValueErrors (ConfigError among them) and FileNotFoundErrors whose messages name
    # the input and the fix; anything else is a fault, with its traceback.
    try:
        from .config import load_config

        config = load_config(args.config)  # before joining the group: a bad config fails fast on every rank
    except (ValueError, FileNotFoundError) as e:
        if args.debug:
            raise
        return input_error(e, say=os.environ.get("RANK", "0") == "0")  # every rank read the same file
    try:
        return train(config)
    except (ValueError, FileNotFoundError) as e:
        if args.debug:
            raise
        return input_error(e, say=True)


if __name__ == "__main__":
    sys.exit(main())
