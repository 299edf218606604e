"""The run around the passes: the process group, the lock on every folder and checkpoint this
call writes, the run's configuration and log, the clean-up of temporaries a killed run left, and
at the end the report."""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from misc.engine import dist
from misc.engine.log import log, tee_stdout, to_log_file
from misc.errors import UserError
from misc.io.atomic import atomic_path, remove_stale_temporaries
from misc.io.dataset_tag import claim_folders
from misc.io.lock import lock_folders, release
from misc.io.records import record_of
from misc.irn.sem_seg import boundary_map
from misc.report.run_report import best_effort, plot_examples, write_report
from step.driver import context, resolve
from step.driver.flags import Flags, given_flags
from step.driver.interface import str2bool
from step.driver.provenance import Pipeline, path_of

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "numpy", "scipy", "Pillow", "imageio", "matplotlib", "pydensecrf2", "tqdm")


def already_trained(pipeline: Pipeline, args: Flags, name: str) -> bool:
    """In a whole-chain run (no *_pass flags, no --overwrite), a training pass whose
    checkpoint exists and matches its record (or has none: given by hand) is not redone;
    explicit passes always run. A mismatch is logged when the pass begins."""
    step = pipeline.steps[name]
    if not (args.resume_chain and step.trains and Path(path_of(args, step.writes[0].flag)).is_file()):
        return False
    return pipeline.retrain_reason(args, name) is None


def outputs(pipeline: Pipeline, args: Flags, passes: list[str]) -> dict[str, Path]:
    """What `passes` write, by flag: folders and checkpoints."""
    found = {}
    for name in passes:
        for files in pipeline.steps[name].writes:
            path = path_of(args, files.flag)
            if path is not None:
                found[f"--{files.flag}"] = Path(path)
    return found


def output_folders(pipeline: Pipeline, args: Flags) -> dict[str, Path]:
    """Every folder any pass writes into under these flags (for the dataset tags and the
    clean-up of temporaries), with --seg_label_dir, which train_seg reads labels from."""
    found = {"--metrics_file": Path(args.metrics_file).parent}
    for flag, path in outputs(pipeline, args, list(pipeline.steps)).items():
        found[flag] = path if flag.endswith("_out_dir") else path.parent
    if args.seg_label_dir and args.seg_label_dir != "gt":
        found["--seg_label_dir"] = Path(args.seg_label_dir)
    return found


def save_run_config(args: Flags) -> None:
    """result/run_config.json: this call's command, resolved flags, package versions and git
    commit (also appended to result/runs.jsonl, the history of every call)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or None
    except OSError:  # no git on this machine
        commit = None
    info = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv, "flags": vars(args),
            "python": platform.python_version(), "packages": versions, "git_commit": commit,
            "cuda": torch.version.cuda if torch.cuda.is_available() else None}
    out = Path(args.metrics_file).parent
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "run_config.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1, default=str))
    with open(out / "runs.jsonl", "a") as f:
        f.write(json.dumps(info, default=str) + "\n")


def start_run(pipeline: Pipeline, args: Flags, passes: list[str] | None = None) -> None:
    """Before any pass: the process group, the locks, the run's record and log, and the
    clean-up of temporaries a killed run left behind. Only rank 0 locks and writes; when it
    fails (e.g. a folder is in use) every rank stops.

    Locked (misc/io/lock.py): every output the passes of this call write (`passes`, default:
    those enabled; map and label folders, checkpoints) and the --metrics_file folder (run
    config, metrics, report), so two calls that would write the same place always meet on a
    lock, whatever else they change; the refusal names the output in use and its flag."""
    context.device(args)  # torchrun: set up the process group once, before any pass
    error = None
    if dist.is_main():
        try:
            command = shlex.join([Path(sys.executable).name, *sys.argv])
            if passes is None:
                passes = [n for n in pipeline.steps if getattr(args, f"{n}_pass")]
            written = {path: flag for flag, path in outputs(pipeline, args, passes).items()}
            lock_folders({Path(args.metrics_file).parent: "--metrics_file"}, command,
                         outputs=written)
            claim_folders(output_folders(pipeline, args), args.dataset)  # before any write
            save_run_config(args)
            tee_stdout(f"{args.log_name}.log")
            log(" ".join(sys.argv))
            removed = remove_stale_temporaries(list(output_folders(pipeline, args).values()))
            if removed:
                log(f"removed {removed} temporary files left by an interrupted run")
        except Exception as err:  # every rank must hear of it, or the others wait forever
            error = err
    if not dist.agree(error is None):
        raise error or RuntimeError("rank 0 stopped before the first step; its message says why")
    dist.barrier()  # no rank writes before the clean-up is done


def given_by_hand(pipeline: Pipeline, args: Flags, passes: list[str]) -> list[str]:
    """Notes for the report: checkpoints the passes read that no run of this pipeline made
    (no record, e.g. a released reference checkpoint), used as given; the same for the
    synthetic backbone's cache without its pretraining summary."""
    notes = []
    for cache, value in ((resolve.TOY_BACKBONE, args.backbone_weights),
                         (resolve.TOY_CONFORMER, getattr(args, "conformer_weights", None))):
        backbone = Path(value or "")
        if backbone.resolve() == Path(cache).resolve() and backbone.is_file() \
                and not backbone.with_suffix(".json").is_file():
            notes.append(f"{backbone} (the synthetic backbone's cache) has no record of how it "
                         f"was pretrained: used as given")
    for name in passes:
        for files in pipeline.steps[name].reads:
            path = path_of(args, files.flag)
            writer = pipeline.writer_of(args, path) if path and files.ids is None else None
            if writer and Path(path).is_file() and record_of(path) is None:
                notes.append(f"{path} (--{files.flag}) has no record of what made it: used as "
                             f"given by {name}")
    return sorted(set(notes))


def unread_notes(pipeline: Pipeline, argv: list[str] | None, passes: list[str]) -> list[str]:
    """A note (logged now, and in the report) naming the flags on the command line that no
    pass of this call reads: they have no effect, which a user would otherwise not see. One
    line, since scripts often give every flag to every call."""
    unread = pipeline.unread(given_flags(pipeline.steps.values(), argv), passes)
    if not unread:
        return []
    shown = [f"--{flag}" + (f" (read by {', '.join(readers)})" if readers and len(unread) <= 3
                            else "") for flag, readers in unread.items()]
    note = (f"{len(unread)} flag{'s' if len(unread) > 1 else ''} given that no pass of this "
            f"call reads, without effect: {', '.join(shown)}")
    log(f"note: {note}")
    return [note]


def draw_examples(args: Flags, out_png: Path, n: int = 4) -> Path | None:
    """The first `n` images of the infer list with their CAM, AMN map, IRN boundaries,
    pseudo-mask, GT and instance labels."""
    data = context.dataset(args)
    ids = context.id_list(args.infer_list)[:n]
    return plot_examples({i: data.image_path(i) for i in ids},
                         {"CAM": args.cam_out_dir, "AMN": args.amn_cam_out_dir},
                         {"pseudo-mask": args.sem_seg_out_dir, "ground truth": data.gt_dir()},
                         out_png, instance_dirs={"instances": args.ins_seg_out_dir},
                         boundaries=example_boundaries(args, ids))


def example_boundaries(args: Flags, ids: list[str]) -> dict[str, np.ndarray]:
    """id -> IRN's boundary map (H, W) in [0, 1], as make_sem_seg_labels walks it (image and
    mirror), each stride-4 cell repeated over its 4x4 pixels; {} without an IRN checkpoint."""
    if not Path(args.irn_weights_name).is_file():
        return {}
    forward, samples = context.irn_forward(args), context.irn_samples(args, ids)
    out = {}
    with torch.inference_mode():
        for k, img_id in enumerate(ids):
            sample = samples[k]
            b = boundary_map(forward, sample["imgs"][0].to(context.device(args)), args.irn_crop_size)
            h, w = sample["size"]
            out[img_id] = b.float().cpu().numpy().repeat(4, 0).repeat(4, 1)[:h, :w]
    return out


def finish_run(pipeline: Pipeline, args: Flags, timings: dict[str, float],
               notes: list[str]) -> None:
    """After the passes: result/report.md with its pictures, and the table printed; then the
    folders are unlocked (a run that fails keeps them until its process ends)."""
    try:
        if dist.is_main():
            claim_folders(output_folders(pipeline, args), args.dataset)  # those the passes made
            report(pipeline, args, timings, notes)
    finally:
        release()


def report(pipeline: Pipeline, args: Flags, timings: dict[str, float], notes: list[str]) -> None:
    """result/report.md, best-effort: the steps have finished and written their metrics, so a
    picture or report that fails is said, and the call still ends as its steps did."""
    out = Path(args.metrics_file).parent / "report.md"
    modules = [m.__name__.rsplit(".", 1)[-1] for m in pipeline.modules.values()]
    notes = list(notes)
    examples = best_effort(lambda: draw_examples(args, out.with_name("examples.png")),
                           "the example picture", notes)
    try:
        table = write_report(args.metrics_file, timings, out, modules, examples_png=examples,
                             notes=notes)
    except Exception as err:  # reported, not raised: the steps' outputs are complete
        log(f"warning: the report could not be written ({type(err).__name__}: {err}); the "
            f"steps' outputs and {args.metrics_file} are complete")
        return
    log("\n" + table)
    for note in notes:
        log(f"note: {note}")
    log(f"report: {out} (with threshold_curves.png, examples.png)")


def command_line(main: Callable[[list[str]], object], argv: list[str] | None = None) -> int:
    """`main(argv)` as a command's exit status. An error the user can fix (misc/errors.py)
    prints its message alone, its traceback going to the log file (to the screen as well with
    --debug True); any other exception is a fault of the code and keeps its traceback."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        main(argv)
    except UserError as err:
        trace = "".join(traceback.format_exception(err))
        if debug_requested(argv):
            print(trace, file=sys.stderr, end="")
        where = to_log_file(trace)
        rank, world_size = dist.world()
        print(f"{f'rank {rank}: ' if world_size > 1 else ''}error: {err}\n(traceback: "
              f"{'in ' + where if where else 'none kept'}; --debug True prints it)",
              file=sys.stderr, flush=True)
        return 1
    return 0


def debug_requested(argv: list[str]) -> bool:
    """--debug True in `argv`, read apart from the other flags (which may be what failed)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--debug", type=str2bool, default=False)
    try:
        args, _ = parser.parse_known_args(argv)
    except argparse.ArgumentError:  # a bad value of --debug itself: the message says so
        return False
    return args.debug
