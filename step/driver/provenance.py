"""Provenance: what each pass reads and writes under the resolved flags, the record each of its
outputs gets (docs/outputs.md), and the checks around a pass that keep stale outputs from being
served. Everything here is derived from the steps' declarations (step/driver/interface.py)."""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterable, Iterator, Sequence

from misc.data.dataset import load_img_name_list
from misc.engine import dist
from misc.engine.log import log
from misc.errors import BadInput
from misc.io.records import (
    begin_output,
    end_output,
    file_input,
    folder_input,
    is_done,
    make_record,
    mismatch,
)
from net.conformer import RANDOM_INIT
from step.driver.context import dataset
from step.driver.flags import SHARED, Flag, declared
from step.driver.interface import Files, Step


def path_of(args: argparse.Namespace, flag: str) -> str | None:
    """The path a declared path flag names under the resolved flags. Besides the parser's
    flags: `seg_label_dir` defaults to --sem_seg_out_dir (`gt` means the dataset's ground
    truth, which is not an output), `irn_label_dir` defaults to --amn_ir_label_out_dir,
    `cocoann_source` is the folder make_cocoann exports,
    `seg_backbone_weights` defaults to --backbone_weights for a ResNet-50 DeepLab,
    `conformer_weights` `none` (random initialisation) is no file."""
    if flag == "seg_label_dir":
        value = args.seg_label_dir or args.sem_seg_out_dir
        return None if value == "gt" else value
    if flag == "irn_label_dir":
        return args.irn_label_dir or args.amn_ir_label_out_dir
    if flag == "cocoann_source":
        return args.sem_seg_out_dir if args.cocoann_from_sem_seg else args.ins_seg_out_dir
    if flag == "seg_test_out_dir" and not args.seg_test_list:
        return None
    if flag == "seg_backbone_weights" and args.seg_backbone_weights is None:
        return args.backbone_weights if args.seg_backbone == "resnet50" else None
    if flag == "conformer_weights" and str(args.conformer_weights).lower() == RANDOM_INIT:
        return None
    return getattr(args, flag)


def list_of(args: argparse.Namespace, flag: str | None) -> str | None:
    """The list file a list flag names (`eval_list`: the --chainer_eval_set split's list of
    the dataset; `seg_eval_list` defaults to --val_list); None for a single file."""
    if flag is None:
        return None
    if flag == "eval_list":
        return str(dataset(args).split_list(args.chainer_eval_set))
    if flag == "seg_eval_list":
        return args.seg_eval_list or args.val_list
    return getattr(args, flag)


@dataclass(frozen=True)
class Pipeline:
    """The passes in pipeline order (their declarations and modules) and every flag."""
    steps: dict[str, Step]
    modules: dict[str, ModuleType]
    flags: dict[str, Flag]

    @classmethod
    def of(cls, modules: Sequence[ModuleType]) -> Pipeline:
        steps = {m.STEP.name: m.STEP for m in modules}
        return cls(steps, {m.STEP.name: m for m in modules}, declared(steps.values()))

    def settings(self, name: str) -> list[str]:
        """The flags whose values shape what pass `name` writes: its own and those it uses,
        less paths and lists (recorded as inputs, by content)."""
        step = self.steps[name]
        own = [f.name for f in step.flags] + list(step.uses)
        paths = {f.flag for f in step.reads + step.writes}
        return [f for f in own if self.flags[f].shapes and f not in paths]

    def declared_reads(self, name: str) -> set[str]:
        """The flags pass `name` declares: its own, those it uses, its lists and paths."""
        step = self.steps[name]
        files = step.reads + step.writes
        return ({f.name for f in step.flags} | set(step.uses + step.also_reads)
                | {f.flag for f in files} | {f.ids for f in files if f.ids}
                | set(step.trains_on + step.images + step.gt) | {f"{name}_pass"})

    def allowed_reads(self, name: str) -> set[str]:
        """The flags pass `name` may read: its declaration, and the shared flags that shape
        nothing (dataset roots, devices, workers, ...)."""
        return self.declared_reads(name) | {f.name for f in SHARED if not f.shapes}

    def unread(self, given: Iterable[str], passes: Iterable[str]) -> dict[str, list[str]]:
        """Flags among `given` that no pass of `passes` reads, each with the passes that
        would. Shared flags no step declares (roots, devices, workers) count as read by every
        call."""
        declared = {name: self.declared_reads(name) for name in self.steps}
        everywhere = {f.name for f in SHARED if not f.shapes} - set().union(*declared.values())
        read = everywhere.union(*(declared[name] for name in passes))
        return {flag: [n for n, flags in declared.items() if flag in flags]
                for flag in given if flag not in read and not flag.endswith("_pass")}

    def expected_record(self, args: argparse.Namespace, name: str) -> dict:
        """The record pass `name` would give its outputs under the current flags: its input
        files by content hash, its input folders by record id, the lists it trains on by
        content, its shaping flags."""
        step = self.steps[name]
        inputs = {}
        for files in step.reads:
            path = path_of(args, files.flag)
            if path is not None:
                inputs[files.flag] = file_input(path) if files.ids is None else folder_input(path)
        for list_flag in step.trains_on:
            inputs[list_flag] = file_input(list_of(args, list_flag))
        return make_record(name, inputs, {f: getattr(args, f) for f in self.settings(name)})

    def writer_of(self, args: argparse.Namespace, path: str | Path
                  ) -> tuple[str, Files] | None:
        """The pass (and declaration) that writes `path` under the current flags."""
        for name, step in self.steps.items():
            for files in step.writes:
                made = path_of(args, files.flag)
                if made is not None and Path(made).resolve() == Path(path).resolve():
                    return name, files
        return None

    def stale_inputs(self, args: argparse.Namespace, name: str) -> list[str]:
        """Inputs of pass `name` (folders and checkpoints) whose record says they were made
        from other inputs or flags than the current ones would give. Not checked: inputs their
        writer remakes in this call, inputs without a record (given by hand), and the lists a
        checkpoint was trained on (a pass may infer on another list with it)."""
        problems = []
        for files in self.steps[name].reads:
            path = path_of(args, files.flag)
            writer = self.writer_of(args, path) if path is not None else None
            if writer is None or getattr(args, f"{writer[0]}_pass", False):
                continue
            expected = self.expected_record(args, writer[0])
            if files.ids is None:  # a checkpoint: its training lists are not this pass's
                for list_flag in self.steps[writer[0]].trains_on:  # (--train_list also names
                    expected["inputs"].pop(list_flag, None)      # the ids to infer on)
            reason = mismatch(path, expected)
            if reason:
                problems.append(f"{name}: {reason}; rerun --{writer[0]}_pass True to remake it "
                                f"(or point --{files.flag} at an up-to-date one)")
        return problems

    def retrain_reason(self, args: argparse.Namespace, name: str) -> str | None:
        """Why the checkpoint of training pass `name` no longer matches its inputs and flags
        (None when it does, or has no record: given by hand)."""
        checkpoint = path_of(args, self.steps[name].writes[0].flag)
        return mismatch(checkpoint, self.expected_record(args, name))

    @contextlib.contextmanager
    def recorded_outputs(self, args: argparse.Namespace, name: str
                         ) -> Iterator[None]:
        """Around pass `name`: refuse stale inputs; before it, keep the files of its output
        folders when their record matches (a resumed run) or mark them stale (remade, each
        replaced in place), and mark each output incomplete; after it, mark each output
        complete with its record, and remove a remade folder's files that this call did not
        remake (made under other settings: a folder holds one record's files only)."""
        problems = self.stale_inputs(args, name)  # on every rank: all stop together
        if problems:
            raise BadInput("\n".join(problems))
        step = self.steps[name]
        outputs = [(path_of(args, f.flag), f.ids) for f in step.writes]
        outputs = [(Path(p), ids) for p, ids in outputs if p is not None]
        record = self.expected_record(args, name) \
            if outputs and dist.is_main() else None
        if record is not None:
            for path, list_flag in outputs:
                self._begin(args, name, path, list_flag, record)
        dist.barrier()
        yield
        dist.barrier()
        if record is not None:
            for path, _ in outputs:
                removed = end_output(path, record, step.suffix)
                if removed:
                    log(f"{name}: removed {removed} {step.suffix} files of {path} that were made "
                        f"with other inputs or flags and are not on this call's list")

    def _begin(self, args: argparse.Namespace, name: str, path: Path, list_flag: str | None,
               record: dict) -> None:
        suffix = self.steps[name].suffix if list_flag is not None else ""
        before = _files(path, suffix) if list_flag is not None else set()
        reason = begin_output(path, record, suffix, args.overwrite)
        if list_flag is None:
            if reason and path.is_file():
                log(f"{name}: {reason}: retraining")
            return
        ids = load_img_name_list(list_of(args, list_flag))
        if reason and before:
            log(f"{name}: {reason}: remaking {len(ids)} {suffix} files")
        elif before:  # in a remake a killed run left, files older than its marker are redone
            kept = sum(is_done(path / f) for f in before & {i + suffix for i in ids})
            log(f"{name}: {path} was made with the same inputs and flags: keeping its {kept} "
                f"files of the {len(ids)} of {Path(list_of(args, list_flag)).name}, "
                f"making the other {len(ids) - kept}")


def _files(folder: Path, suffix: str) -> set[str]:
    return {p.name for p in folder.glob(f"*{suffix}")} if folder.is_dir() else set()


def undeclared(pipeline: Pipeline, name: str, read: Iterable[str]) -> list[str]:
    """Flags pass `name` read that its declaration does not name (a programming error: their
    values would be missing from its outputs' records)."""
    return sorted(set(read) - pipeline.allowed_reads(name))
