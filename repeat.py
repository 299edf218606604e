"""Run the same run_sample.py call once per seed, then aggregate the seeds' numbers.

    python repeat.py --seeds 0 1 2 3 4                       # the toy chain, five seeds
    python repeat.py --seeds 0 1 --train_cam_pass True --make_cam_pass True --eval_cam_pass True
    torchrun --nproc_per_node 4 repeat.py --seeds 0 1 2 --voc12_root VOC2012 ...

Every flag but --seeds goes to run_sample.py (not --seed: this script sets it). Seed k writes
into its own folders: each output flag's path gets `seeds/seed<k>` inserted (after the
--metrics_file folder for paths inside it, else before the last component: result/cam ->
result/seeds/seed0/cam, sess/res50_cam.pth -> sess/seeds/seed0/res50_cam.pth). A rerun skips
the seeds whose run with this same command finished (misc/repeats.is_finished); then
summary.md, summary.json and threshold_band.png go to result/seeds/ (the --metrics_file folder's
seeds/). Under torchrun every rank runs the same seed loop; rank 0 writes the summary.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import run_sample
from misc.report.repeats import is_finished, mark_finished, write_summary
from step.driver.resolve import insert_folder, is_output_flag, separate_outputs
from step.driver.resolve import parse as parse_flags
from step.driver.workspace import command_line

SEEDS_FOLDER = "seeds"


def parse(argv: list[str] | None) -> tuple[list[int], list[str]]:
    """(--seeds, the run_sample.py flags); refuses --seed, which each repeat sets."""
    # allow_abbrev=False: run_sample's own --seed must not pass for an abbreviation of --seeds
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="one run per seed")
    ours, rest = p.parse_known_args(argv)
    if any(a == "--seed" or a.startswith("--seed=") for a in rest):
        p.error("--seed is set per repeat: give the seeds with --seeds")
    if len(set(ours.seeds)) != len(ours.seeds):
        p.error(f"--seeds {ours.seeds}: each seed once")
    parse_flags(run_sample.PIPELINE, rest)  # a bad flag fails before the first seed
    return ours.seeds, rest


def is_rank0() -> bool:
    """Rank 0, also before run_sample has set up the process group (all seeds skipped)."""
    from misc.engine import dist
    return dist.is_main() and int(os.environ.get("RANK", "0")) == 0


def say(message: str) -> None:
    """Print on rank 0 only, flushed (into run_sample's log once a run has tee'd stdout)."""
    if is_rank0():
        print(message, flush=True)


def seed_folder(seed: int) -> str:
    return f"{SEEDS_FOLDER}/seed{seed}"


def seed_argv(rest: list[str], seed: int) -> list[str]:
    """run_sample.py flags of one repeat: `rest`, --seed, and every output flag moved into
    the seed's folder (after the dataset folder run_sample adds: result/coco14/seeds/seed0)."""
    args = parse_flags(run_sample.PIPELINE, rest)
    separate_outputs(run_sample.PIPELINE, args)
    base = str(Path(args.metrics_file).parent)
    argv = [*rest, "--seed", str(seed)]
    for key, value in vars(args).items():
        if is_output_flag(key):  # later flags win: these override `rest`
            argv += [f"--{key}", insert_folder(value, seed_folder(seed), base)]
    return argv


def metrics_file(argv: list[str]) -> Path:
    """The --metrics_file of a repeat's flags (as run_sample resolves it)."""
    args = parse_flags(run_sample.PIPELINE, argv)
    separate_outputs(run_sample.PIPELINE, args)
    return Path(args.metrics_file)


def main(argv: list[str] | None = None) -> dict[int, Path]:
    """Run the seeds not yet finished, then (rank 0) write the summary; returns seed ->
    metrics file."""
    seeds, rest = parse(argv)
    runs = {seed: seed_argv(rest, seed) for seed in seeds}
    files = {seed: metrics_file(a) for seed, a in runs.items()}
    # decided before any run, from files of earlier calls: every rank decides alike
    done = {seed for seed in seeds if is_finished(files[seed].parent, runs[seed])}
    for seed in seeds:
        if seed in done:
            say(f"repeat: seed {seed} finished earlier ({files[seed].parent}/report.md), skipped")
            continue
        say(f"repeat: seed {seed} -> {files[seed].parent}")
        start = time.time()
        run_sample.main(runs[seed])
        if is_rank0():
            mark_finished(files[seed].parent, runs[seed], seed, time.time() - start)
    if is_rank0():
        out = files[seeds[0]].parent.parent
        say("\n" + write_summary(files, out))
        say(f"repeat: {len(seeds)} seeds -> {out}/summary.md (summary.json, threshold_band.png)")
    return files


if __name__ == "__main__":
    sys.exit(command_line(main))
