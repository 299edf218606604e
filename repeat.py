"""Run the same run_sample.py call once per seed, then aggregate the seeds' numbers.

    python repeat.py --seeds 0 1 2 3 4                       # the toy chain, five seeds
    python repeat.py --seeds 0 1 --seg_puf clamp --arm ce "--seg_puf none"   # and an arm
    python repeat.py --seeds 0 1 --train_cam_pass True --make_cam_pass True --eval_cam_pass True
    torchrun --nproc_per_node 4 repeat.py --seeds 0 1 2 --voc12_root VOC2012 ...

Every flag but --seeds goes to run_sample.py (not --seed: this script sets it). Seed k writes
into its own folders: each output flag's path gets `seeds/seed<k>` inserted (after the
--metrics_file folder for paths inside it, else before the last component: result/cam ->
result/seeds/seed0/cam, sess/res50_cam.pth -> sess/seeds/seed0/res50_cam.pth). A rerun skips
the seeds whose run with this same command finished (misc/repeats.is_finished); then
summary.md, summary.json and threshold_band.png go to result/seeds/ (the --metrics_file folder's
seeds/). Under torchrun every rank runs the same seed loop; rank 0 writes the summary.

`--arm NAME "FLAGS"` (repeatable) also runs, per seed, the same call with FLAGS appended (later
flags win), after the seed's main run. The arm redoes only the passes that FLAGS change: a pass
whose flags and inputs equal the main run's is not rerun, its outputs are read from the main
run's folders (their records are checked as any input's); the passes it redoes write into
`seeds/NAME/seed<k>`. Its numbers join the summary as `NAME.<metric>`, which claims such as
PUF against plain CE read (misc/report/repeats.CLAIMS, docs/pmm.md §10).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from pathlib import Path

import run_sample
from misc.report.repeats import is_finished, mark_finished, write_summary
from step.driver.resolve import insert_folder, is_output_flag, select_passes, separate_outputs
from step.driver.resolve import parse as parse_flags
from step.driver.workspace import command_line

SEEDS_FOLDER = "seeds"


def parse(argv: list[str] | None) -> tuple[list[int], list[str], dict[str, list[str]]]:
    """(--seeds, the run_sample.py flags, arm name -> its extra flags); refuses --seed, which
    each repeat sets."""
    # allow_abbrev=False: run_sample's own --seed must not pass for an abbreviation of --seeds
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="one run per seed")
    p.add_argument("--arm", nargs=2, action="append", default=[], metavar=("NAME", "FLAGS"),
                   help='also run the call with FLAGS (one quoted string) appended, per seed, '
                        'in seeds/NAME/; its numbers are NAME.<metric> in the summary')
    ours, rest = p.parse_known_args(argv)
    arms = {name: shlex.split(flags) for name, flags in ours.arm}
    if any(a == "--seed" or a.startswith("--seed=") for a in rest + sum(arms.values(), [])):
        p.error("--seed is set per repeat: give the seeds with --seeds")
    if len(set(ours.seeds)) != len(ours.seeds):
        p.error(f"--seeds {ours.seeds}: each seed once")
    for name in arms:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name.startswith("seed"):
            p.error(f"--arm {name}: a name of lower-case letters, digits and _, not starting "
                    f"with 'seed' (it names a folder and the prefix of its metrics)")
    if len(arms) != len(ours.arm):
        p.error("--arm: each name once")
    for extra in [[]] + list(arms.values()):  # a bad flag fails before the first seed
        parse_flags(run_sample.PIPELINE, rest + extra)
    return ours.seeds, rest, arms


def is_rank0() -> bool:
    """Rank 0, also before run_sample has set up the process group (all seeds skipped)."""
    from misc.engine import dist
    return dist.is_main() and int(os.environ.get("RANK", "0")) == 0


def say(message: str) -> None:
    """Print on rank 0 only, flushed (into run_sample's log once a run has tee'd stdout)."""
    if is_rank0():
        print(message, flush=True)


def seed_folder(seed: int, arm: str | None = None) -> str:
    return f"{SEEDS_FOLDER}/seed{seed}" if arm is None else f"{SEEDS_FOLDER}/{arm}/seed{seed}"


def seed_argv(rest: list[str], seed: int, arm: str | None = None,
              extra: list[str] | None = None) -> list[str]:
    """run_sample.py flags of one repeat: `rest`, --seed, and every output flag moved into
    the seed's folder (after the dataset folder run_sample adds: result/coco14/seeds/seed0).
    For the arm `arm` (its flags `extra`): `rest` + `extra`, the passes of `reused_passes` off
    with their outputs in the seed's folder, every other output in the arm's
    (result/seeds/<arm>/seed0)."""
    pipeline = run_sample.PIPELINE
    argv = [*rest, *(extra or []), "--seed", str(seed)]
    args = parse_flags(pipeline, argv)
    separate_outputs(pipeline, args)
    base = str(Path(args.metrics_file).parent)
    reused = reused_passes(rest, extra or []) if arm is not None else set()
    kept = {f.flag for name in reused for f in pipeline.steps[name].writes}
    if arm is not None:  # every pass explicit: the reused ones off
        select_passes(pipeline, args)
        argv += [x for name in pipeline.steps for x in
                 (f"--{name}_pass", str(getattr(args, f"{name}_pass") and name not in reused))]
    for key, value in vars(args).items():
        if is_output_flag(key):  # later flags win: these override `rest`
            folder = seed_folder(seed, None if key in kept else arm)
            argv += [f"--{key}", insert_folder(value, folder, base)]
    return argv


def reused_passes(rest: list[str], extra: list[str]) -> set[str]:
    """The passes of the call `rest` + `extra` (an arm) that the main call `rest` runs with the
    same shaping flags, lists and inputs, so their outputs can be read from the main run: a pass
    is redone when it reads a flag `extra` changes or a file a redone pass writes."""
    pipeline = run_sample.PIPELINE
    main, arm = parse_flags(pipeline, rest), parse_flags(pipeline, rest + extra)
    select_passes(pipeline, main)
    select_passes(pipeline, arm)
    changed = {k for k, v in vars(arm).items()
               if not k.endswith("_pass") and not is_output_flag(k) and getattr(main, k) != v}
    redone, reused = set(), set()
    for name, step in pipeline.steps.items():
        if not getattr(arm, f"{name}_pass"):
            continue
        if getattr(main, f"{name}_pass") and not pipeline.declared_reads(name) & (changed | redone):
            reused.add(name)
        else:
            redone |= {f.flag for f in step.writes}
    return reused


def metrics_file(argv: list[str]) -> Path:
    """The --metrics_file of a repeat's flags (as run_sample resolves it)."""
    args = parse_flags(run_sample.PIPELINE, argv)
    separate_outputs(run_sample.PIPELINE, args)
    return Path(args.metrics_file)


def run_seed(argv: list[str], metrics: Path, seed: int, what: str) -> None:
    """One repeat, unless its run with these flags finished earlier (decided from files of
    earlier calls, before any run: every rank decides alike)."""
    if is_finished(metrics.parent, argv):
        say(f"repeat: {what} finished earlier ({metrics.parent}/report.md), skipped")
        return
    say(f"repeat: {what} -> {metrics.parent}")
    start = time.time()
    run_sample.main(argv)
    if is_rank0():
        mark_finished(metrics.parent, argv, seed, time.time() - start)


def main(argv: list[str] | None = None) -> dict[int, Path]:
    """Run the seeds (and their arms) not yet finished, then (rank 0) write the summary;
    returns seed -> metrics file of the main runs."""
    seeds, rest, arms = parse(argv)
    runs = {seed: seed_argv(rest, seed) for seed in seeds}
    files = {seed: metrics_file(a) for seed, a in runs.items()}
    arm_runs = {name: {seed: seed_argv(rest, seed, name, extra) for seed in seeds}
                for name, extra in arms.items()}
    arm_files = {name: {seed: metrics_file(a) for seed, a in by_seed.items()}
                 for name, by_seed in arm_runs.items()}
    for seed in seeds:
        run_seed(runs[seed], files[seed], seed, f"seed {seed}")
        for name in arms:
            run_seed(arm_runs[name][seed], arm_files[name][seed], seed, f"arm {name}, seed {seed}")
    if is_rank0():
        out = files[seeds[0]].parent.parent
        say("\n" + write_summary(files, out, arm_files))
        say(f"repeat: {len(seeds)} seeds -> {out}/summary.md (summary.json, threshold_band.png)")
    return files


if __name__ == "__main__":
    sys.exit(command_line(main))
