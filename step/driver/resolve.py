"""From the command line to the resolved flags of a call: the profile and --config defaults,
the dataset's lists, the embedded toy dataset and its backbone when no root is given, the
separate output folders of other datasets, and which passes run."""
from __future__ import annotations

from pathlib import Path

from data.pretrain_backbone import (
    CONFORMER_S,
    DEFAULT_BACKBONE_PATH,
    DEFAULT_CONFORMER_PATH,
    DEFAULT_STEPS,
)
from data.toy_dataset import ToyConfig
from data.toy_parts import PartsConfig
from step.driver import context
from step.driver.flags import (
    Flags,
    check_domains,
    check_keys,
    coerce,
    defaults,
    given_flags,
    load_config,
)
from step.driver.provenance import Pipeline

REPO = Path(__file__).resolve().parents[2]
# the no-argument run: toy dataset, its generator settings, the cached synthetic backbone
TOY_ROOT, TOY_CONFIG = REPO / "data" / "toy", ToyConfig()
TOY_COCO_ROOT = REPO / "data" / "toy_coco"  # the same images in COCO layout (--dataset coco14)
# --toy_dataset parts: the second generator (classes defined by a part's shape)
PARTS_ROOT, PARTS_CONFIG = REPO / "data" / "toy_parts_voc", PartsConfig()
PARTS_COCO_ROOT = REPO / "data" / "toy_parts_coco"
TOY_BACKBONE, TOY_PRETRAIN_STEPS = DEFAULT_BACKBONE_PATH, DEFAULT_STEPS
# the toy's --conformer_weights: built only when a pass reading it runs (docs/bao.md §3.1)
TOY_CONFORMER, TOY_CONFORMER_STEPS = DEFAULT_CONFORMER_PATH, CONFORMER_S.steps

# default lists per --dataset (paths relative to the repository); the toy root carries its own
DATASET_LISTS = {
    "voc12": dict(train_list="voc12/train_aug.txt", val_list="voc12/val.txt",
                  infer_list="voc12/train.txt"),
    "coco14": dict(train_list="coco14/train14.txt", val_list="coco14/val14.txt",
                   infer_list="coco14/train14.txt"),
}
ROOT_FLAGS = {"voc12": "voc12_root", "coco14": "coco14_root"}
# the split whose list a list flag takes on a root that carries its own lists (the toy roots)
SPLIT_OF = {"voc12": {"train_list": "train_aug", "val_list": "val", "infer_list": "train"},
            "coco14": {"train_list": "train", "val_list": "val", "infer_list": "train"}}


def parse(pipeline: Pipeline, argv: list[str] | None, description: str = "") -> Flags:
    """Every flag's value: the command line, else --config, else the profile, else the
    declaration (no dataset-dependent defaults yet: `resolve` fills those)."""
    given = given_flags(pipeline.steps.values(), argv, description)
    config = load_config(given.get("config"))
    check_keys(config, pipeline.flags, f"--config {given.get('config')}")
    config = {k: coerce(pipeline.flags[k], v, f"--config {given.get('config')}")
              for k, v in config.items()}
    chosen = {k: v for k, v in {**config, **given}.items() if not k.endswith("_pass")}
    dataset = chosen.get("dataset", "voc12")
    toy = chosen.get(ROOT_FLAGS.get(dataset, "voc12_root")) is None
    profile = chosen.get("profile") or ("toy" if toy else dataset)
    values = {**defaults(pipeline.steps.values(), profile), **chosen, "profile": profile}
    check_domains(pipeline.flags, values)
    passes = {f"{name}_pass": given.get(f"{name}_pass") for name in pipeline.steps}
    return Flags(**values, **passes)


def resolve(pipeline: Pipeline, args: Flags) -> Flags:
    """Fill dataset- and profile-dependent defaults; build the toy dataset and backbone when no
    root is given; check the dataset root before anything is written; decide the passes."""
    toy = getattr(args, ROOT_FLAGS[args.dataset]) is None
    separate_outputs(pipeline, args)  # before prepare_toy sets the root
    if toy:
        prepare_toy(args)
    from voc12.dataloader import default_cls_labels
    if args.dataset == "voc12" and args.cls_labels is None:
        args.cls_labels = str(default_cls_labels(Path(args.voc12_root)))
    data = context.dataset(args)  # fail fast on a bad root
    own_lists = toy or args.dataset == "coco14"  # a COCO root may carry <split>14.txt lists
    for flag, path in DATASET_LISTS[args.dataset].items():
        if getattr(args, flag) is None:
            split = SPLIT_OF[args.dataset][flag]
            setattr(args, flag, str(data.split_list(split) if own_lists else REPO / path))
    if args.seg_train_list is None:  # the toy chain makes pseudo-masks for its infer list only
        args.seg_train_list = args.infer_list if toy else args.train_list
    if args.amp == "auto":
        from misc.engine.precision import native_bf16
        args.amp = native_bf16(args.device)
    if args.poly_momentum < 0:
        args.poly_momentum = None  # PolyOptimizer's reference quirk
    for kind in ("fg", "bg"):  # the reference's shared flags override the per-step values
        if getattr(args, f"conf_{kind}_thres") is not None:
            for step in ("cam", "amn"):
                setattr(args, f"{step}_conf_{kind}_thres", getattr(args, f"conf_{kind}_thres"))
    select_passes(pipeline, args)
    if toy:
        prepare_toy_conformer(pipeline, args)
    return args


def select_passes(pipeline: Pipeline, args: Flags) -> None:
    """With no *_pass flag every non-optional pass runs (a whole-chain run, which keeps the
    checkpoints that still match); with some, only those given True."""
    passes = {name: getattr(args, f"{name}_pass") for name in pipeline.steps}
    run_all = all(v is None for name, v in passes.items() if not pipeline.steps[name].optional)
    for name, step in pipeline.steps.items():
        setattr(args, f"{name}_pass", bool(passes[name]) or (run_all and not step.optional))
    args.resume_chain = run_all and not args.overwrite


def prepare_toy(args: Flags) -> None:
    """Point the flags at the --toy_dataset and the synthetic backbone, building both on first
    use (cached under data/: later runs start at once)."""
    from data.pretrain_backbone import ensure_pretrained_backbone
    if args.toy_dataset == "parts":
        from data.toy_parts import ensure_parts_dataset
        voc_root, coco_root = ensure_parts_dataset(PARTS_ROOT, PARTS_CONFIG), PARTS_COCO_ROOT
    else:
        from data.toy_dataset import ensure_toy_dataset
        voc_root, coco_root = ensure_toy_dataset(TOY_ROOT, TOY_CONFIG), TOY_COCO_ROOT
    if args.dataset == "coco14":
        from coco14.prepare import prepare
        from data.toy_coco import build_toy_coco
        args.coco14_root = str(build_toy_coco(voc_root, coco_root))
        prepare(args.coco14_root)  # resumable: a prepared root is left as it is
    else:
        args.voc12_root = str(voc_root)
    if args.backbone_weights is None:
        args.backbone_weights = str(ensure_pretrained_backbone(TOY_BACKBONE, TOY_PRETRAIN_STEPS))


def prepare_toy_conformer(pipeline: Pipeline, args: Flags) -> None:
    """The toy's --conformer_weights when none is given: the Conformer-S pretrained on the
    synthetic procedural data (data/pretrain_backbone.py, cached, built on first use), only
    when a pass that reads the flag (train_transcam) runs; otherwise the flag stays as given,
    so a call without the TransCAM passes (the default run) never builds it."""
    readers = [name for name, step in pipeline.steps.items()
               if any(files.flag == "conformer_weights" for files in step.reads)]
    if args.conformer_weights is None and any(getattr(args, f"{n}_pass") for n in readers):
        from data.pretrain_backbone import ensure_pretrained_conformer
        args.conformer_weights = str(ensure_pretrained_conformer(TOY_CONFORMER,
                                                                 TOY_CONFORMER_STEPS))


def output_subfolder(args: Flags) -> str | None:
    """The folder between result/ (sess/) and the outputs: the dataset unless voc12, then
    `parts` for the embedded parts dataset (result/coco14/parts/...); None for VOC and the toy."""
    folders = [args.dataset] if args.dataset != "voc12" else []
    if args.toy_dataset == "parts" and getattr(args, ROOT_FLAGS[args.dataset]) is None:
        folders.append("parts")
    return "/".join(folders) or None


def separate_outputs(pipeline: Pipeline, args: Flags) -> None:
    """Outputs of a dataset other than voc12, or of the embedded parts dataset, go to
    result/<subfolder>/ and sess/<subfolder>/ unless their flags are given: VOC, COCO, the toy and
    parts outputs never share a folder."""
    folder = output_subfolder(args)
    if folder is None:
        return
    for key, value in vars(args).items():
        flag = pipeline.flags.get(key)
        if (flag is not None and is_output_flag(key) and value == flag.default
                and value.split("/")[0] in ("result", "sess")):
            setattr(args, key, insert_folder(value, folder, "result"))


def is_output_flag(key: str) -> bool:
    """Flags naming what a pass writes: *_out_dir folders, *_weights_name checkpoints and
    --metrics_file (its folder also takes run_config.json, runs.jsonl and the report)."""
    return key.endswith(("_out_dir", "_weights_name")) or key == "metrics_file"


def insert_folder(path: str, folder: str, base: str) -> str:
    """`path` with `folder` inserted: right after `base` for a path in (or equal to) `base`,
    else just before its last component. With base "result": result/cam -> result/F/cam,
    result -> result/F, sess/x.pth -> sess/F/x.pth (separate_outputs' dataset folders; the
    seed folders of repeat.py, whose base is the --metrics_file folder)."""
    parts, base_parts = Path(path).parts, Path(base).parts
    if parts[:len(base_parts)] == base_parts:
        return str(Path(base, folder, *parts[len(base_parts):]))
    return str(Path(path).parent / folder / Path(path).name)
