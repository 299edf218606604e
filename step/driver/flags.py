"""The command line, assembled from the steps' declarations (step/driver/interface.py): one
argparse group of shared flags, then one group per step in pipeline order, so that --help reads
as the pipeline. Defaults resolve as: the command line, then --config FILE, then the profile
file (voc12/profile.toml, coco14/profile.toml, data/toy_profile.toml), then the declaration."""
from __future__ import annotations

import argparse
import difflib
import os
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Mapping

from misc.errors import BadInput, MissingInput
from step.driver.interface import NON_NEGATIVE, POSITIVE, PROFILE, Flag, Step, bool_or_auto, str2bool

REPO = Path(__file__).resolve().parents[2]
PROFILE_FILES = {"voc12": REPO / "voc12" / "profile.toml",
                 "coco14": REPO / "coco14" / "profile.toml",
                 "toy": REPO / "data" / "toy_profile.toml"}


def default_workers() -> int:
    """Half the cores; none on <= 2 cores, where a worker takes a core from the network."""
    cores = os.cpu_count() or 1
    return cores // 2 if cores > 2 else 0


# flags every step may read; those with shapes=True are recorded only where a step `uses` them
SHARED = (
    Flag("config", help="a TOML file of flag values (a profile of your own, e.g. the sizes of a "
                        "custom VOC-layout dataset); `profile = \"voc12\"` in it picks the profile "
                        "it extends; flags given on the command line win", shapes=False),
    Flag("profile", choices=tuple(PROFILE_FILES), shapes=False,
         help="the size and schedule defaults (crops, batches, epochs, rates, walk length, "
              "DeepLab): voc12 = the reference's; toy = the embedded toy dataset's, also for a "
              "small VOC-layout root of your own; default: toy without a dataset root, else "
              "the --dataset's"),
    Flag("dataset", default="voc12", choices=("voc12", "coco14"), shapes=False,
         help="the data layer: voc12 (any VOC-layout root, the toy dataset included) or coco14 "
              "(MS COCO 2014, prepared once with `python -m coco14.prepare`); outputs of a "
              "dataset other than voc12 default to result/<dataset>/ and sess/<dataset>/"),
    Flag("toy_dataset", default="toy", choices=("toy", "parts"), shapes=False,
         help="the embedded synthetic dataset used when no dataset root is given (built on "
              "first use): toy = classes by colour and texture (data/toy_dataset.py), parts = "
              "classes by the shape of a small part (data/toy_parts.py); parts outputs default "
              "to result/parts/ and sess/parts/"),
    Flag("voc12_root", shapes=False,
         help="VOC2012 folder (JPEGImages, SegmentationClass, ImageSets); default: the toy dataset"),
    Flag("coco14_root", shapes=False,
         help="COCO 2014 folder (train2014/, val2014/, annotations/); default with --dataset "
              "coco14: the toy dataset in COCO layout"),
    Flag("coco14_gt_dir", shapes=False,
         help="folder of ready semantic PNGs <id>.png (e.g. the published coco_seg_anno), "
              "scored instead of <coco14_root>/SegmentationClass14 written by the preparation"),
    Flag("cls_labels", shapes=False,
         help="image-level label CSV; default <voc12_root>/cls_labels.csv if present, else "
              "voc12/cls_labels.csv"),
    Flag("train_list", shapes=False,
         help="training list of train_cam/amn/irn and the maps' list; default "
              "voc12/train_aug.txt"),
    Flag("val_list", shapes=False, help="default voc12/val.txt"),
    Flag("infer_list", shapes=False,
         help="pseudo-mask list of make_sem_seg_labels and make_ins_seg_labels (and of "
              "train_irn's displacement mean); default voc12/train.txt"),
    Flag("chainer_eval_set", default="train", shapes=False,
         help="the split the seed, IR-label and pseudo-mask evaluations score"),
    Flag("backbone_weights", shapes=False,
         help="torchvision-format ResNet-50 ImageNet weights (.pth); default for the toy "
              "dataset: the synthetic-data backbone, built and cached on first use"),
    Flag("device", default="auto", shapes=False,
         help="auto, cpu, cuda or cuda:N (one process; under torchrun rank r takes GPU r)"),
    Flag("dist_timeout", type=float, default=360.0, shapes=False, domain=POSITIVE,
         help="minutes a torchrun rank waits in a collective before it is aborted (the others "
              "wait while the main rank validates, monitors and evaluates)"),
    Flag("amp", type=bool_or_auto, default=PROFILE,
         help="mixed precision for the networks' forward passes (bf16 where the device has it, "
              "else fp16 with loss scaling; auto: only where the device computes bf16 "
              "natively); losses, merges and the random walk stay float32"),
    Flag("channels_last", type=str2bool, default=PROFILE,
         help="channels_last memory layout for the networks and their inputs"),
    Flag("deterministic", type=str2bool, default=False, shapes=False,
         help="deterministic kernels only (torch.use_deterministic_algorithms, cuDNN "
              "deterministic, no cuDNN benchmark): for GPUs, where some kernels are not; a CPU "
              "run is bit-identical at the same thread count without it (docs/toy.md, "
              "\"Determinism\")"),
    Flag("seed", type=int, default=0, domain=NON_NEGATIVE),
    Flag("num_workers", type=int, default=default_workers(), shapes=False,
         shown="half the cores (0 on <= 2)",
         help="DataLoader worker processes; default: half the cores, 0 (load in the main "
              "process) on a machine with 2 cores or fewer (see --cpu_workers for the CRF pools)",
         domain=NON_NEGATIVE),
    Flag("cpu_workers", type=int, shapes=False,
         help="processes for per-image CPU work beside the networks: the dense CRF of the "
              "IR-label steps and eval_seg, the seed evaluation's threads (<= 1: in the main "
              "process); default: the cores shared among the torchrun processes", domain=NON_NEGATIVE),
    Flag("debug", type=str2bool, default=False, shapes=False,
         help="print the traceback of an error the user can fix (bad flag, path or file) "
              "beside its message; it is always in the log file"),
    Flag("overwrite", type=str2bool, default=False, shapes=False,
         help="redo outputs that already exist"),
    Flag("checkpoint_every", type=int, default=PROFILE, shapes=False,
         help="train_cam, train_amn, train_irn: write a resumable training state every N steps "
              "(0: never)", domain=NON_NEGATIVE),
    Flag("resume", type=str2bool, default=True, shapes=False,
         help="continue a killed train_cam/amn/irn from its state file (ignored with "
              "--overwrite True)"),
    Flag("log_name", default="sample_train_eval", shapes=False),
    Flag("metrics_file", default="result/metrics.jsonl", shapes=False,
         help="one JSON line per evaluation; its folder also takes run_config.json, runs.jsonl "
              "and report.md"),
)


def declared(steps: Iterable[Step]) -> dict[str, Flag]:
    """Every flag by name: the shared ones, then each step's own."""
    flags = {f.name: f for f in SHARED}
    for step in steps:
        for f in step.flags:
            if f.name in flags:
                raise ValueError(f"--{f.name} is declared twice (again by {step.name})")
            flags[f.name] = f
    return flags


def pass_flag(step: Step) -> Flag:
    what = "joins a whole-chain run only when given True" if step.optional else \
        "with no *_pass flag every non-optional pass runs"
    return Flag(f"{step.name}_pass", type=str2bool, shapes=False,
                help=f"run {step.name} ({what})")


def load_profile(name: str) -> dict[str, Any]:
    """The flag values of a profile, with those of the profile it extends underneath."""
    return _load_extending(PROFILE_FILES[name], ())


def _load_extending(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A profile file's values over those of its `extends`: a profile name, or a TOML file
    (relative to this one)."""
    if path.resolve() in seen:
        raise BadInput(f"profile file {path} extends itself (through {seen[-1]})")
    values = _read_toml(path)
    base = values.pop("extends", None)
    if base is None:
        return values
    base_path = PROFILE_FILES[base] if base in PROFILE_FILES else path.parent / base
    return {**_load_extending(base_path, seen + (path.resolve(),)), **values}


def load_config(path: str | None) -> dict[str, Any]:
    """--config FILE: its flag values (`profile` among them picks the profile it extends)."""
    return _read_toml(Path(path)) if path else {}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as err:
        raise MissingInput(f"profile file {path}: {err.strerror}; pass an existing TOML "
                                f"file") from err
    except tomllib.TOMLDecodeError as err:
        raise BadInput(f"profile file {path} is not valid TOML: {err}") from err


def coerce(flag: Flag, value: Any, source: str) -> Any:
    """A profile or config value as the command line would give it (tuples for nargs flags),
    checked by the flag's type and choices."""
    if flag.nargs is not None:
        if not isinstance(value, list):
            raise BadInput(f"{source}: {flag.name} = {value!r} must be a list")
        return tuple(coerce(Flag(flag.name, flag.type), v, source) for v in value)
    try:
        value = flag.type(value) if isinstance(value, str) or flag.type in (int, float) else value
    except (ValueError, argparse.ArgumentTypeError) as err:
        raise BadInput(f"{source}: {flag.name} = {value!r}: {err}") from err
    if flag.choices is not None and value not in flag.choices:
        raise BadInput(f"{source}: {flag.name} = {value!r} is not one of {list(flag.choices)}")
    return value


def check_keys(values: Mapping[str, Any], flags: Mapping[str, Flag], source: str) -> None:
    unknown = [k for k in values if k not in flags]
    if unknown:
        hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, flags, 1))
                 else k for k in unknown]
        raise BadInput(f"{source}: unknown flag(s) {', '.join(hints)}")


def check_domains(flags: Mapping[str, Flag], values: Mapping[str, Any]) -> None:
    """Every value against its flag's domain (None, an unset optional value, passes): one
    error naming each flag out of its domain, before any step runs."""
    wrong = []
    for name, value in values.items():
        domain = flags[name].domain if name in flags else None
        if domain is not None and value is not None and not domain.admits(value):
            shown = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
            wrong.append(f"--{name} {shown}: outside its domain {domain}")
    if wrong:
        raise BadInput("flag values outside their domains:\n  " + "\n  ".join(wrong))


def domain_help(flag: Flag) -> str:
    return f" (values: {flag.domain})" if flag.domain is not None else ""


def profile_help(flag: Flag) -> str:
    """The flag's help, then its default under each profile, e.g. "512 (voc12), 128 (toy)"."""
    values = []
    for name in PROFILE_FILES:
        v = load_profile(name).get(flag.name)
        values.append(f"{' '.join(map(str, v)) if isinstance(v, list) else v} ({name})")
    return (f"{flag.help}; " if flag.help else "") + "default by --profile: " + ", ".join(values)


def _add(group: argparse._ArgumentGroup, flag: Flag) -> None:
    kwargs = dict(type=flag.type, default=argparse.SUPPRESS, nargs=flag.nargs,
                  choices=flag.choices, metavar=flag.metavar)
    if flag.default is PROFILE:
        text = profile_help(flag)
    elif flag.default is None:
        text = flag.help
    else:
        shown = " ".join(map(str, flag.default)) if isinstance(flag.default, tuple) else flag.default
        text = (f"{flag.help}; " if flag.help else "") + f"default: {shown}"
    group.add_argument(f"--{flag.name}", help=(text + domain_help(flag)).replace("%", "%%"),
                       **{k: v for k, v in kwargs.items() if v is not None})


def build_parser(steps: Iterable[Step], description: str = "") -> argparse.ArgumentParser:
    """One group of shared flags, then one group per step (its pass flag first). Flags are
    matched exactly (no abbreviations); absent flags are absent from the namespace."""
    steps = list(steps)
    declared(steps)  # a flag declared twice is an error
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                     usage="python run_sample.py [--FLAG VALUE ...]",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = parser.add_argument_group("shared")
    for flag in SHARED:
        _add(shared, flag)
    for step in steps:
        group = parser.add_argument_group(step.name, step.title)
        for flag in (pass_flag(step),) + step.flags:
            _add(group, flag)
    return parser


def given_flags(steps: Iterable[Step], argv: list[str] | None, description: str = ""
                ) -> dict[str, Any]:
    """The flags on the command line, by name (nothing for those not given). Flags are
    matched exactly; an unknown one is an error that suggests the nearest names."""
    parser = build_parser(steps, description)
    given, extra = parser.parse_known_args(argv)
    if extra:
        known = [o for a in parser._actions for o in a.option_strings]
        parser.error("; ".join(unknown_flag(token, known) for token in extra
                               if token.startswith("-")) or f"unexpected values: {' '.join(extra)}")
    return vars(given)


def unknown_flag(token: str, known: list[str]) -> str:
    """The error for an unknown `--flag` (or `--flag=value`), with the nearest known names."""
    name = token.split("=", 1)[0]
    near = difflib.get_close_matches(name, known, n=1)
    return f"unknown flag {name}" + (f" (did you mean {near[0]}?)" if near else "")


def defaults(steps: Iterable[Step], profile: str, config: Mapping[str, Any] | None = None
             ) -> dict[str, Any]:
    """Every declared flag's value when none is given: the config's, else the profile's, else
    the declaration's (PROFILE flags the profile lacks: None)."""
    flags = declared(steps)
    values = load_profile(profile)
    check_keys(values, flags, str(PROFILE_FILES[profile]))
    out = {}
    for name, flag in flags.items():
        if config and name in config:
            out[name] = config[name]
        elif flag.default is PROFILE or name in values:
            out[name] = coerce(flag, values[name], str(PROFILE_FILES[profile])) \
                if name in values else None
        else:
            out[name] = flag.default
    return out


def markdown_table(steps: Iterable[Step]) -> str:
    """docs/flags.md: every flag by group, with its default (per profile where it has one)."""
    steps = list(steps)
    profiles = {name: load_profile(name) for name in PROFILE_FILES}
    lines = ["# Flags", "",
             "Generated from the steps' declarations (`python -m tests.test_step_interface` "
             "rewrites it; a test keeps it current). Defaults per profile where the profile files set "
             "them.", ""]

    def show(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return " ".join(map(str, v))
        return "" if v is None else str(v)

    for title, flags in [("shared", SHARED)] + [(s.name, (pass_flag(s),) + s.flags) for s in steps]:
        lines += [f"## {title}", "", "| flag | default | " + " | ".join(profiles) + " | help |",
                  "| --- | --- | " + " | ".join("---" for _ in profiles) + " | --- |"]
        for f in flags:
            default = "profile" if f.default is PROFILE else f.shown or show(f.default)
            per = [show(p.get(f.name)) for p in profiles.values()]
            text = (f.help + domain_help(f)).replace("|", "\\|")
            lines.append(f"| `--{f.name}` | {default} | " + " | ".join(per) + f" | {text} |")
        lines.append("")
    return "\n".join(lines)


def steps_of(modules: Iterable[ModuleType]) -> list[Step]:
    return [m.STEP for m in modules]


_reading: set[str] | None = None  # the flags read while a pass runs (Flags.__getattribute__)


class Flags(argparse.Namespace):
    """The resolved flags of a call. While `reads_during` is active, every flag read is noted,
    so the driver can check a pass against its declaration (every flag that shapes an output
    must be in that output's record)."""

    def __getattribute__(self, name: str) -> Any:
        if _reading is not None and not name.startswith("_"):
            _reading.add(name)
        return super().__getattribute__(name)

    def derive(self, **changes: Any) -> Flags:
        """A copy with some values changed (reads of it are noted too)."""
        return Flags(**{**vars(self), **changes})


class reads_during:
    """`with reads_during() as read:` collects the names of the flags read inside."""

    def __enter__(self) -> set[str]:
        global _reading
        self._outer, _reading = _reading, set()
        return _reading

    def __exit__(self, *exc: object) -> None:
        global _reading
        if self._outer is not None:
            self._outer |= _reading
        _reading = self._outer
