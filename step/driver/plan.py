"""The plan check before the first step (docs/README.md, "Plan check"): what this call's passes
read exists or is made by an earlier pass of the same call, the weights fit their networks,
the lists name images of the dataset, and the disk holds the outputs. Every problem is
collected and raised at once, in seconds, instead of one at a time hours into the run.

What each pass reads and writes comes from the steps' declarations; the checkpoint checks
reuse the loaders of misc/io/ and net/resnet50.py, so their messages are the steps'.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from PIL import Image

from misc.data.dataset import load_img_name_list
from misc.engine import dist
from misc.engine.log import log
from misc.errors import UserError
from misc.io.checkpoints import load_bao_checkpoint, load_checkpoint
from net import conformer
from net.deeplabv2 import BACKBONES, SEG_WEIGHTS_HELP, deeplab_v2_msc
from net.resnet50 import WEIGHTS_HELP, ResNet50, load_backbone_weights
from net.resnet50_irn import REFERENCE_LOSS_BUFFERS
from step.driver import context
from step.driver.provenance import Pipeline, list_of, path_of

# Bytes per image pixel of each per-image output, measured on the toy-COCO run (240 images of
# ~112x112: file bytes / image pixels over result/coco14/<folder>) and rounded up. Map files are
# per channel-pixel, one channel per class of the image (AMN adds the background): 4.30 in the
# float32 format (4 x (1 + 1/16): full size + stride 4, plus npz headers), 0.61 (CAM) and 0.90
# (AMN) in today's 16-bit compressed one (misc/io/maps.save_maps; the toy maps re-encoded).
# The PNGs compress: VOC-size labels take less per pixel.
BYTES_PER_PIXEL = {"cam_out_dir": 0.65, "amn_cam_out_dir": 0.95,    # per channel
                   "transcam_out_dir": 0.65,                         # as CAMs: same format
                   # as AMN maps, plus the argmax label plane (estimated, not measured)
                   "bao_cam_out_dir": 1.0, "bao_out_dir": 0.05,
                   "bao_amn_cam_out_dir": 1.0, "bao_amn_out_dir": 0.05,
                   "ir_label_out_dir": 0.06, "amn_ir_label_out_dir": 0.05,
                   "sem_seg_out_dir": 0.04, "ins_seg_out_dir": 0.07,
                   "seg_pred_out_dir": 0.09, "seg_test_out_dir": 0.09,
                   "seg_gt_pred_out_dir": 0.09}
# map channels beyond the classes
EXTRA_CHANNELS = {"cam_out_dir": 0, "amn_cam_out_dir": 1, "transcam_out_dir": 0,
                  "bao_cam_out_dir": 1, "bao_amn_cam_out_dir": 1}
# Checkpoint bytes (torch.save of the state_dict at 20 and 80 classes, fitted linearly):
# (bytes, bytes per foreground class). Training also keeps the resumable state (weights and
# optimiser buffers) beside it: counted as TRAINING_COPIES checkpoints.
CHECKPOINT_BYTES = {"cam": (94.39e6, 8.2e3), "amn": (94.73e6, 303e3), "irn": (100.02e6, 0),
                    "deeplab_resnet101": (170.93e6, 295e3), "deeplab_resnet50": (94.65e6, 295e3),
                    # Conformer-S: 36.47 M float32 values at 20 classes, 9,602 a class (heads)
                    "transcam": (145.1e6, 38.4e3),
                    # BAO: TransCAM + label_enc (1024 a class) and classifier_x (9 x 1024 a
                    # class), float32, twice (student and teacher); estimated from the shapes,
                    # not measured; BAO on the AMN: AMN's checkpoint twice
                    "bao": (290.28e6, 158.8e3), "bao_amn": (189.46e6, 606e3)}
TRAINING_COPIES = 3
MEAN_CLASSES = 1.5  # classes per image when a list has no image-level labels (VOC: 1.56)
SIZE_SAMPLE = 20    # images whose header gives a list's mean size

# read flags whose files a pass makes under another flag: train_seg's labels are make_sem_seg's
# pseudo-masks, also when --seg_label_dir names a folder of its own; train_irn's the AMN IR
# labels (or any pass's labels: --irn_label_dir)
MADE_AS = {"seg_label_dir": "sem_seg_out_dir", "irn_label_dir": "amn_ir_label_out_dir"}

class PlanError(UserError, FileNotFoundError, ValueError):
    """This call's passes cannot all run: one message lists every problem. Both a
    FileNotFoundError (an input is missing) and a ValueError (an input does not fit)."""


@dataclass
class Plan:
    steps: list[str]                                    # passes that run, in pipeline order
    problems: list[str] = field(default_factory=list)
    disk: list[str] = field(default_factory=list)       # "plan: outputs need ..." lines


@dataclass(frozen=True)
class Producer:
    step: str
    list_flag: str | None
    ids: frozenset | None  # the ids it writes; None when its list is unreadable


def check_plan(pipeline: Pipeline, args: argparse.Namespace, kept: Iterable[str] = ()
               ) -> list[str]:
    """Every problem of this call's plan (empty when it can run). `kept`: enabled training
    passes that will not run because their checkpoint exists (run_sample.already_trained)."""
    return inspect_plan(pipeline, args, kept).problems


def verify(pipeline: Pipeline, args: argparse.Namespace, kept: Iterable[str] = ()) -> Plan:
    """check_plan, raising PlanError with every problem; logs the disk estimate and the time.
    Every rank runs it (reads only, seconds), so under torchrun all ranks stop together."""
    start = time.perf_counter()
    plan = inspect_plan(pipeline, args, kept)
    seconds = time.perf_counter() - start
    if plan.problems:
        n = len(plan.problems)
        log(f"plan: {n} problem{'s' if n > 1 else ''} found in {seconds:.2f} s; no step ran")
        raise PlanError(f"this call cannot run as given ({n} problem{'s' if n > 1 else ''}, "
                        f"found in {seconds:.2f} s before the first step; no step ran):\n"
                        + "\n".join(f"  - {p}" for p in plan.problems))
    for line in plan.disk:
        log(line)
    log(f"plan: {len(plan.steps)} steps, inputs checked in {seconds:.2f} s")
    return plan


def inspect_plan(pipeline: Pipeline, args: argparse.Namespace, kept: Iterable[str] = ()
                 ) -> Plan:
    kept = set(kept)
    plan = Plan([name for name in pipeline.steps
                 if getattr(args, f"{name}_pass") and name not in kept])
    check = _Checker(pipeline, args)
    plan.problems += check.device()
    plan.problems += check.lists(plan.steps)
    plan.problems += check.batches(plan.steps)
    plan.problems += check.ground_truth(plan.steps)
    produced: dict[str, Producer] = {}
    for name in plan.steps:
        io = pipeline.steps[name]
        for files in io.reads:
            plan.problems += check.read(name, files.flag, files.ids, produced)
        for files in io.writes:
            list_flag, path = files.ids, path_of(args, files.flag)
            if path is not None:
                ids = check.ids(list_flag) if list_flag else ()
                produced[_key(path)] = Producer(name, list_flag,
                                                None if ids is None else frozenset(ids))
    needs = check.output_bytes(plan.steps)
    plan.disk, disk_problems = _disk_report(needs)
    plan.problems += disk_problems
    return plan


def _key(path: str | Path) -> str:
    return os.path.abspath(path)


def _show(path: str | Path) -> str:
    """A path as short as it reads well: relative to the working folder when inside it."""
    rel = os.path.relpath(os.path.abspath(path))
    return str(path) if rel.startswith("..") else rel


def _passes(names: list[str]) -> str:
    return ", ".join(f"--{n}_pass True" for n in names)


def _message(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


class _Checker:
    """The checks of one plan, with the lists, folder listings and weight checks cached."""

    def __init__(self, pipeline: Pipeline, args: argparse.Namespace):
        self.steps, self.args, self.data = pipeline.steps, args, context.dataset(args)
        self._ids: dict[str, list[str] | None] = {}
        self._list_errors: dict[str, str] = {}
        self._weights: set[tuple] = set()  # (network, file) pairs checked
        self._listings: dict[str, frozenset] = {}

    def missing(self, folder: str | Path, ids: Iterable[str], suffix: str,
                first_only: bool = False) -> list[str]:
        """The ids without `folder/<id><suffix>`: one listing per folder and check, no stat
        per id (the check writes nothing, so the listing stays true while it runs)."""
        key = _key(folder)
        if key not in self._listings:
            self._listings[key] = _listing(folder)
        missing = []
        for i in ids:
            if i + suffix not in self._listings[key]:
                missing.append(i)
                if first_only:
                    break
        return missing

    # ---- lists -------------------------------------------------------------------------
    def list_desc(self, list_flag: str) -> str:
        path = _show(list_of(self.args, list_flag))
        if list_flag == "eval_list":
            return f"--chainer_eval_set {self.args.chainer_eval_set} ({path})"
        return f"--{list_flag} {path}"

    def ids(self, list_flag: str) -> list[str] | None:
        """The ids of a list flag's file, None when it is unset or unreadable (reported once)."""
        if list_flag not in self._ids:
            try:
                path = list_of(self.args, list_flag)
                self._ids[list_flag] = None if path is None else load_img_name_list(path)
            except (OSError, ValueError) as err:
                self._ids[list_flag] = None
                self._list_errors[list_flag] = f"--{list_flag}: {_message(err)}"
        return self._ids[list_flag]

    def lists(self, steps: list[str]) -> list[str]:
        """Every list the passes use exists; its ids are images of the dataset (with image-level
        labels where a pass reads them)."""
        used, labelled = {}, set()
        for name in steps:
            io = self.steps[name]
            for list_flag in [f.ids for f in io.reads + io.writes if f.ids] + list(io.images + io.gt):
                used.setdefault(list_flag, None)
            labelled.update(lf for lf in io.images if lf not in io.unlabelled)
        problems, imaged = [], set()
        for list_flag in used:
            ids = self.ids(list_flag)
            if list_flag in self._list_errors:
                problems.append(self._list_errors[list_flag])
            if ids is None:
                continue
            name = str(list_of(self.args, list_flag))
            try:  # each image once: the lists overlap (train in train_aug, ...)
                self.data.check_images([i for i in ids if i not in imaged], name)
                if list_flag in labelled:
                    self.data.labels.check_ids(ids, name)
            except (OSError, KeyError, ValueError) as err:
                problems.append(f"--{list_flag}: {_message(err)}")
            imaged.update(ids)
        return problems

    def batches(self, steps: list[str]) -> list[str]:
        """Each training list holds one global batch, which splits evenly over the ranks."""
        problems, world = [], dist.world()[1]
        for name in (n for n in steps if self.steps[n].batch):
            list_flag, batch_flag = self.steps[name].trains_on[0], self.steps[name].batch
            ids, batch = self.ids(list_flag), getattr(self.args, batch_flag)
            if ids is not None and len(ids) < batch:
                problems.append(f"{name}: {self.list_desc(list_flag)} has {len(ids)} images, "
                                f"fewer than one batch of --{batch_flag} {batch}; lower it")
            if batch % world:
                problems.append(f"{name}: --{batch_flag} {batch} does not split over the "
                                f"{world} processes; pick a multiple of {world}")
        return problems

    def ground_truth(self, steps: list[str]) -> list[str]:
        """A ground-truth PNG for every id of the lists the evaluations score."""
        problems, seen = [], set()
        for name in steps:
            for list_flag in self.steps[name].gt:
                ids, key = self.ids(list_flag), list_of(self.args, list_flag)
                if ids is None or key in seen:
                    continue
                seen.add(key)
                try:
                    gt_dir = self.data.gt_dir()
                except OSError as err:
                    problems.append(f"{name}: {_message(err)}")
                    continue
                missing = self.missing(gt_dir, ids, ".png")
                if missing:
                    problems.append(f"{gt_dir}: no ground truth for {len(missing)} of {len(ids)} "
                                    f"ids of {self.list_desc(list_flag)} (e.g. {missing[0]}), "
                                    f"which {name} scores against; fix the list or the root")
        return problems

    # ---- reads -------------------------------------------------------------------------
    def read(self, step: str, flag: str, list_flag: str | None,
             produced: dict[str, Producer]) -> list[str]:
        if list_flag is None:
            return self.file_read(step, flag, produced)
        partial = any(f.partial for f in self.steps[step].reads if f.flag == flag)
        if partial or self.ids(list_flag) is None:
            return []
        return self.folder_read(step, flag, list_flag, produced)

    def writer_of(self, path: str) -> tuple[str, str, str | None] | None:
        """(pass, flag, list flag) of the pass that writes `path` under these flags."""
        for name, io in self.steps.items():
            for files in io.writes:
                value = path_of(self.args, files.flag)
                if value is not None and _key(value) == _key(path):
                    return name, files.flag, files.ids
        return None

    def locate(self, flag: str) -> tuple[str, str, str, tuple | None]:
        """(folder, suffix, noun, writer) of a per-image read; `gt` labels are the dataset's."""
        path = path_of(self.args, flag)
        if path is None:  # --seg_label_dir gt
            return str(self.data.gt_dir()), ".png", "ground-truth label", None
        writer = self.writer_of(path)
        suffix = self.steps[writer[0]].suffix if writer else ".png"
        noun = self.noun_of(writer[1] if writer else flag)
        return path, suffix, noun, writer

    def noun_of(self, flag: str) -> str:
        """What one file of a path flag is, from the declarations (writes first)."""
        declared = [f for s in self.steps.values() for f in s.writes + s.reads if f.flag == flag]
        return next((f.noun for f in declared if f.noun != "file"), "file")

    def folder_read(self, step: str, flag: str, list_flag: str,
                    produced: dict[str, Producer]) -> list[str]:
        """One file per id of the list: made earlier in this call for a list that covers it,
        or on disk."""
        try:
            folder, suffix, noun, writer = self.locate(flag)
        except OSError as err:
            return [f"{step}: {_message(err)}"]
        ids = self.ids(list_flag)
        producer = produced.get(_key(folder))
        if producer is not None and producer.list_flag is not None:
            if producer.ids is None:
                return []  # its list is unreadable: reported by the list check
            missing = self.missing(folder, [i for i in ids if i not in producer.ids], suffix)
            return [self.coverage_problem(step, folder, noun, list_flag, producer, missing)] \
                if missing else []
        missing = self.missing(folder, ids, suffix)
        if not missing:
            return []
        where = f"{_show(folder)}: no {noun} for {len(missing)} of {len(ids)} ids of " \
                f"{self.list_desc(list_flag)} (e.g. {missing[0]}), which {step} reads"
        # `--seg_label_dir gt` (no path) is the dataset's ground truth, which no pass makes
        if writer is None and flag in MADE_AS and path_of(self.args, flag) is not None:
            writer = self.writer_of(path_of(self.args, MADE_AS[flag]))
            extra = f" --{MADE_AS[flag]} {_show(folder)}"
        else:
            extra = ""
        if writer is None:
            return [f"{where}; fix --{flag} or the list"]
        make = f"run --{writer[0]}_pass True"
        if writer[2] and set(missing) - set(self.ids(writer[2]) or ()):  # not on its list
            make += f" --{writer[2]} {_show(list_of(self.args, list_flag))}"
        make += extra
        shown_flag = flag if hasattr(self.args, flag) else writer[1]
        before = self.upstream(writer[0], produced)
        after = f" (after {_passes(before)})" if before else ""
        return [f"{where}: {make}{after} first, or point --{shown_flag} at existing {noun}s"]

    def coverage_problem(self, step: str, folder: str, noun: str, list_flag: str,
                         producer: Producer, missing: list[str]) -> str:
        """The consumer's list is not covered by the list the producer runs on in this call."""
        mine, theirs = list_of(self.args, list_flag), list_of(self.args, producer.list_flag)
        fixes = [f"`--{producer.list_flag} {_show(mine)}`"]
        if list_flag != "eval_list":
            fixes.insert(0, f"`--{list_flag} {_show(theirs)}`")
        return (f"{_show(folder)}: {step} reads a {noun} per id of {self.list_desc(list_flag)} "
                f"({len(self.ids(list_flag))} ids), but {producer.step} makes them in this call "
                f"for {self.list_desc(producer.list_flag)} only: {len(missing)} ids have none "
                f"(e.g. {missing[0]}); pass {' or '.join(fixes)}")

    def upstream(self, writer: str, produced: dict[str, Producer],
                 seen: set | None = None) -> list[str]:
        """The passes `writer` needs first because its own inputs are missing too (and not
        made earlier in this call), recursively, in pipeline order."""
        seen = set() if seen is None else seen
        needed = []
        for files in self.steps[writer].reads:
            flag, list_flag = files.flag, files.ids
            path = path_of(self.args, flag)
            if path is None or _key(path) in produced:
                continue
            if list_flag is None:
                absent = not Path(path).is_file()
            else:
                ids = self.ids(list_flag) or []
                suffix = self.locate(flag)[1]
                absent = bool(self.missing(path, ids, suffix, first_only=True))
            source = self.writer_of(path)
            if absent and source and source[0] not in seen:
                seen.add(source[0])
                needed += self.upstream(source[0], produced, seen) + [source[0]]
        return sorted(set(needed), key=list(self.steps).index)

    def file_read(self, step: str, flag: str, produced: dict[str, Producer]) -> list[str]:
        """A weight file made earlier in this call, or one that loads into its network."""
        path = path_of(self.args, flag)
        if path is not None and _key(path) in produced:
            return []
        if flag == "seg_backbone_weights" and path is None:
            return [f"{step}: no --seg_backbone_weights for the {self.args.seg_backbone} "
                    f"DeepLab. {SEG_WEIGHTS_HELP}"]
        problems = self.weights(flag, path)
        writer = self.writer_of(path) if path else None
        if problems and writer and not Path(path).is_file():
            before = self.upstream(writer[0], produced)
            if before:
                problems = [f"{p}; {writer[0]} needs {_passes(before)} first" for p in problems]
        return problems

    # ---- weights -----------------------------------------------------------------------
    def weights(self, flag: str, path: str | None) -> list[str]:
        """Load `path` into the network `flag` is for, once per file and network: the
        loaders' own messages, prefixed with the flag, for the first pass that reads it (train_cam,
        train_amn and train_irn all read --backbone_weights: one problem, not three)."""
        # the toy's ResNet-50 DeepLab starts from the backbone: the same file and network
        net = {"backbone_weights": "resnet50", "seg_backbone_weights": self.args.seg_backbone}
        key = (net.get(flag, flag), path and _key(path))
        if key in self._weights:
            return []
        self._weights.add(key)
        try:
            writer = next((n for n, s in self.steps.items()
                           if any(f.flag == flag for f in s.writes)), flag)
            check = WEIGHT_LOADERS.get(flag) or _checkpoint(flag, writer)
            check(self.args, self.data.n_classes, path)
        except (OSError, ValueError, KeyError, RuntimeError, ImportError) as err:
            return [f"--{flag}: {_message(err)}"]
        return []

    # ---- environment -------------------------------------------------------------------
    def device(self) -> list[str]:
        if str(self.args.device).startswith("cuda") and not torch.cuda.is_available():
            return ["--device cuda: this machine has no usable CUDA device; pass --device cpu "
                    "(or auto)"]
        return []

    def output_bytes(self, steps: list[str]) -> dict[str, float]:
        """Estimated bytes each written path still needs (files already there are skipped by
        the steps, so they count nothing)."""
        needs = {}
        for name in steps:
            for files in self.steps[name].writes:
                flag, list_flag = files.flag, files.ids
                path = path_of(self.args, flag)
                if path is None:
                    continue
                if list_flag is None:
                    needs[path] = TRAINING_COPIES * self.checkpoint_bytes(flag)
                elif self.ids(list_flag) is not None and flag in BYTES_PER_PIXEL:
                    # the folder's own suffix: make_bao writes .npz maps and .png labels
                    todo = self.missing(path, self.ids(list_flag),
                                        files.suffix or self.steps[name].suffix)
                    needs[path] = needs.get(path, 0) + self.folder_bytes(flag, list_flag, todo)
        return needs

    def checkpoint_bytes(self, flag: str) -> float:
        net = flag.removesuffix("_weights_name")  # cam, amn, irn, seg, seg_gt
        if net.startswith("seg"):
            net = f"deeplab_{self.args.seg_backbone}"
        base, per_class = CHECKPOINT_BYTES.get(net, (0.0, 0.0))
        return base + per_class * self.data.n_classes

    def folder_bytes(self, flag: str, list_flag: str, ids: list[str]) -> float:
        if not ids:
            return 0.0
        channels = 1.0
        if flag in EXTRA_CHANNELS:
            channels = self.mean_classes(ids) + EXTRA_CHANNELS[flag]
        return len(ids) * channels * BYTES_PER_PIXEL[flag] * self.mean_pixels(list_flag)

    def mean_classes(self, ids: list[str]) -> float:
        try:
            labels = self.data.labels
            return sum(float(labels[i].sum()) for i in ids) / len(ids)
        except (OSError, KeyError, ValueError):
            return MEAN_CLASSES

    def mean_pixels(self, list_flag: str) -> float:
        return _mean_pixels(self.data, tuple(self.ids(list_flag) or ()))


def _mean_pixels(data, ids: tuple[str, ...]) -> float:
    """Mean width x height over SIZE_SAMPLE evenly spaced images (headers only)."""
    step = max(1, len(ids) // SIZE_SAMPLE)
    sizes = []
    for i in ids[::step][:SIZE_SAMPLE]:
        try:
            with Image.open(data.image_path(i)) as img:
                sizes.append(img.size[0] * img.size[1])
        except (OSError, ValueError):
            continue  # reported by the list check, or by the step that decodes it
    return sum(sizes) / len(sizes) if sizes else 0.0


def _listing(folder: str | Path) -> frozenset:
    """The names in a folder (empty when it does not exist)."""
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return frozenset()


# ---- weight loaders: the loaders of the steps, on a freshly built network -------------------
def _placeholder_or(build: Callable[[], torch.nn.Module], path: str | None) -> torch.nn.Module:
    """The network to load into; a missing file fails in the loader before the network is
    used, so building it (a few tenths of a second) is skipped."""
    return build() if path is not None and Path(path).is_file() else torch.nn.Module()


def _load_backbone(layers: tuple[int, ...], path: str | None, help_text: str) -> None:
    """load_backbone_weights on a ResNet built on the meta device: it compares names and
    shapes, and the final copy into meta tensors is a no-op (no 100-170 MB copy). The network
    checkpoints below load on the CPU: load_checkpoint compares tensors that share storage."""
    def build() -> torch.nn.Module:
        with torch.device("meta"):
            return ResNet50(layers=layers)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        load_backbone_weights(_placeholder_or(build, path), path, help_text)


def _backbone(args: argparse.Namespace, n_classes: int, path: str | None) -> None:
    _load_backbone(BACKBONES["resnet50"], path, WEIGHTS_HELP)


def _seg_backbone(args: argparse.Namespace, n_classes: int, path: str | None) -> None:
    _load_backbone(BACKBONES[args.seg_backbone], path, SEG_WEIGHTS_HELP)


def _conformer_weights(args: argparse.Namespace, n_classes: int, path: str | None) -> None:
    """train_transcam's starting weights (or `none`), loaded into a Conformer built on the
    meta device as _load_backbone's ResNet."""
    def build() -> torch.nn.Module:
        with torch.device("meta"):
            return conformer.Net(n_classes, depth=args.transcam_depth)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        conformer.load_starting_weights(_placeholder_or(build, path),
                                        path if path is not None else args.conformer_weights)


def _network(args: argparse.Namespace, n_classes: int, flag: str) -> torch.nn.Module:
    """The network a checkpoint flag's file loads into, built as the step that reads it does."""
    if flag == "transcam_weights_name":
        return conformer.Net(n_classes, depth=args.transcam_depth)
    if flag == "bao_weights_name":
        return conformer.Net(n_classes, with_bao_layers=True, depth=args.transcam_depth)
    if flag == "cam_weights_name":
        return context.network(args.cam_network, "--cam_network")(n_classes)
    if flag in ("amn_weights_name", "bao_amn_weights_name"):  # BAO-AMN: the AMN network
        return context.network(args.amn_network, "--amn_network")(n_classes,
                                                                 dropout=args.amn_dropout)
    if flag == "irn_weights_name":
        return context.network(args.irn_network, "--irn_network")()
    return deeplab_v2_msc(n_classes + 1, args.seg_backbone, args.seg_backbone_style)


BAO_CHECKPOINTS = ("bao_weights_name", "bao_amn_weights_name")  # student + teacher.*


def _checkpoint(flag: str, writer: str) -> Callable[[argparse.Namespace, int, str | None], None]:
    """The check of a checkpoint flag: load_checkpoint into its network, as the step that
    writes it (`writer`) would be asked to."""
    ignore = REFERENCE_LOSS_BUFFERS if flag == "irn_weights_name" else ()

    def check(args: argparse.Namespace, n_classes: int, path: str | None) -> None:
        model = _placeholder_or(lambda: _network(args, n_classes, flag), path)
        made_by = f"{writer} (--{writer}_pass True)"
        if flag in BAO_CHECKPOINTS:  # the network make_bao(_amn) takes: student or teacher
            load_bao_checkpoint(model, path, args.bao_infer_model, made_by)
        else:
            load_checkpoint(model, path, made_by=made_by, ignore_prefixes=ignore)
    return check


# the weight files that are no pass's checkpoint -> the check of that file
WEIGHT_LOADERS: dict[str, Callable[[argparse.Namespace, int, str | None], None]] = {
    "backbone_weights": _backbone, "seg_backbone_weights": _seg_backbone,
    "conformer_weights": _conformer_weights}


# ---- disk ---------------------------------------------------------------------------------
def _mount(path: str | Path) -> Path:
    """The mount point of the filesystem `path` is (or will be) on."""
    p = Path(os.path.abspath(path))
    while not p.exists():
        p = p.parent
    while not os.path.ismount(p):
        p = p.parent
    return p


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _disk_report(needs: dict[str, float]) -> tuple[list[str], list[str]]:
    """(log lines, problems): per filesystem, the estimated bytes against the free space."""
    by_mount: dict[Path, dict[str, float]] = {}
    for path, n in needs.items():
        by_mount.setdefault(_mount(path), {})[path] = n
    lines, problems = [], []
    for mount, parts in by_mount.items():
        total, free = sum(parts.values()), shutil.disk_usage(mount).free
        lines.append(f"plan: outputs need ~{_gb(total)}, {_gb(free)} free on {mount}")
        if total > free:
            biggest = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
            detail = ", ".join(f"{_show(p)} ~{_gb(n)}" for p, n in biggest)
            problems.append(f"{mount}: the outputs need ~{_gb(total)} ({detail}) and only "
                            f"{_gb(free)} are free: free space or point the output flags at "
                            f"another disk")
    return lines, problems
