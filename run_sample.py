"""Driver of the pipeline, with the reference run_sample.py's flags.

    python run_sample.py                        # toy dataset (built on first use), every step
    python run_sample.py --voc12_root VOC2012 --train_cam_pass True --make_cam_pass True ...
    torchrun --nproc_per_node 4 run_sample.py --voc12_root VOC2012 --train_cam_pass True

With no *_pass flag every available step runs in pipeline order; with some, only those.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from data.pretrain_backbone import DEFAULT_BACKBONE_PATH, DEFAULT_STEPS
from data.toy_dataset import ToyConfig
from data.toy_parts import PartsConfig

REPO = Path(__file__).resolve().parent
# the no-argument run: toy dataset, its generator settings, the cached synthetic backbone
TOY_ROOT, TOY_CONFIG = REPO / "data" / "toy", ToyConfig()
TOY_COCO_ROOT = REPO / "data" / "toy_coco"  # the same images in COCO layout (--dataset coco14)
# --toy_dataset parts: the second generator (classes defined by a part's shape, data/toy_parts.py)
PARTS_ROOT, PARTS_CONFIG = REPO / "data" / "toy_parts_voc", PartsConfig()
PARTS_COCO_ROOT = REPO / "data" / "toy_parts_coco"
TOY_BACKBONE, TOY_PRETRAIN_STEPS = DEFAULT_BACKBONE_PATH, DEFAULT_STEPS

# pass flag name -> step module, in pipeline order
STEPS = {"train_cam": "train_cam", "make_cam": "make_cam", "eval_cam": "eval_cam",
         "cam_to_ir_label": "cam_to_ir_label", "train_amn": "train_amn",
         "make_amn_cam": "make_amn_cam", "eval_amn_cam": "eval_amn_cam",
         "amn_cam_to_ir_label": "amn_cam_to_ir_label", "train_irn": "train_irn",
         "make_ins_seg": "make_ins_seg_labels", "eval_ins_seg": "eval_ins_seg",
         "make_sem_seg": "make_sem_seg_labels", "eval_sem_seg": "eval_sem_seg",
         "make_cocoann": "make_cocoann",
         "train_seg": "train_seg", "eval_seg": "eval_seg",
         "train_seg_gt": "train_seg_gt", "eval_seg_gt": "eval_seg_gt"}
# passes a whole-chain run (no *_pass flag) leaves off; given True, they join it: DeepLab on the
# ground truth, the upper bound of the pseudo-masks (one more DeepLab training)
OPTIONAL_STEPS = ("train_seg_gt", "eval_seg_gt")

# Size flags whose default depends on --profile (voc12 values are the reference's); the help
# texts of these flags are generated from this table.
PROFILES = {
    "voc12": dict(cam_crop_size=512, cam_resize_long=(320, 640), cam_batch_size=16,
                cam_scales=(1.0, 0.5, 1.5, 2.0),
                cam_num_epoches=5, cam_frozen_stages=2, infer_batch_size=8, amn_crop_size=512,
                amn_batch_size=16,
                amn_num_epoches=5, irn_crop_size=512, irn_batch_size=32, irn_num_epoches=3,
                seg_backbone="resnet101", seg_crop_size=321, seg_batch_size=10,
                seg_num_iters=30000, checkpoint_every=200, poly_momentum=-1, cam_learning_rate=0.1,
                amn_learning_rate=5e-6, amn_head_learning_rate=1e-4, irn_learning_rate=0.1,
                exp_times=8, sem_seg_bg_thres=0.25, seg_learning_rate=2.5e-4,
                # float32 as the reference until measured on a GPU (README, "Speed")
                amp=False, channels_last=False),
    # 240 train_aug images: 15 steps per epoch at batch 16
    "toy": dict(cam_crop_size=128, cam_resize_long=(96, 160), cam_batch_size=16,
                # 96-128 px images: a 0.5 view is a 3x4 map at stride 16 and adds nothing;
                # 2.0 is 53% of the work (README, "Toy profile": CAM seed 40.9 with these two
                # scales, 40.6 with the reference's four, AMN 49.3 / 49.2, in 45% of the time)
                cam_scales=(1.0, 1.5),
                # the synthetic backbone's stages 1-2 are no ImageNet features: trained on the toy
                # (docs/toy.md: val mAP 89.1 with 2 frozen, 95.9 with none)
                cam_num_epoches=6, cam_frozen_stages=0, infer_batch_size=8, amn_crop_size=128,
                amn_batch_size=16,
                amn_num_epoches=4, irn_crop_size=128, irn_batch_size=16, irn_num_epoches=5,
                # DeepLab ResNet-50: ~0.45 s per iteration on 2 idle CPU cores (bf16, NCHW)
                seg_backbone="resnet50", seg_crop_size=64, seg_batch_size=4,
                seg_num_iters=100, checkpoint_every=30, sem_seg_bg_thres=0.25,
                seg_learning_rate=2.5e-4,
                # ~100 steps instead of ~3300: momentum and 10x Adam rates make up for it
                poly_momentum=0.9, cam_learning_rate=0.03, amn_learning_rate=5e-5,
                amn_head_learning_rate=1e-3, irn_learning_rate=0.03,
                # stride-4 maps of ~28x28 instead of ~94x125: a 16-step walk, not 256
                exp_times=4,
                # bf16 + channels_last: ~2x on a CPU with native bf16 (README, "Speed");
                # auto = where the device computes bf16 natively
                amp="auto", channels_last=True),
}


# the reference's COCO script (docs/pipeline.md §5) and the COCO DeepLab recipe of its lineage
# (docs/deeplab.md §2.4: 100k iterations, lr 2e-4, batch 10, crop 321); the rest as voc12
PROFILES["coco14"] = {**PROFILES["voc12"], "sem_seg_bg_thres": 0.22, "seg_num_iters": 100000,
                      "seg_learning_rate": 2e-4}

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


def profile_help(key: str, what: str = "") -> str:
    """`what`, then the flag's default under each profile, e.g. "512 (voc12), 128 (toy)"."""
    values = []
    for name, profile in PROFILES.items():
        v = profile[key]
        values.append(f"{' '.join(map(str, v)) if isinstance(v, tuple) else v} ({name})")
    return (f"{what}; " if what else "") + "default by --profile: " + ", ".join(values)


def str2bool(v: str) -> bool:
    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {v!r}")


def bool_or_auto(v: str) -> bool | str:
    return "auto" if v.lower() == "auto" else str2bool(v)


def default_workers() -> int:
    """Half the cores; none on <= 2 cores (measured on the toy: a worker slowed each train_cam
    epoch from 7.5 to 8.5 s, the same losses)."""
    cores = os.cpu_count() or 1
    return cores // 2 if cores > 2 else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    # Environment
    a("--num_workers", default=default_workers(), type=int,
      help="DataLoader worker processes; default: half the cores, 0 (load in the main process) "
           "on a machine with 2 cores or fewer, where a worker costs ~1 s per epoch and takes a "
           "core from the network (see --cpu_workers for the CRF pools)")
    a("--cpu_workers", default=None, type=int,
      help="processes for per-image CPU work beside the networks: the dense CRF of the IR-label "
           "steps and eval_seg, the seed evaluation's threads (<= 1: in the main process); "
           "default: the cores shared among the torchrun processes (IR labels on the toy with 2 "
           "cores: 11 s in one process, 8 s in two)")
    a("--dataset", default="voc12", choices=tuple(DATASET_LISTS),
      help="the data layer: voc12 (any VOC-layout root, the toy dataset included) or coco14 "
           "(MS COCO 2014, prepared once with `python -m coco14.prepare`); outputs of a dataset "
           "other than voc12 default to result/<dataset>/ and sess/<dataset>/")
    a("--profile", default=None, choices=tuple(PROFILES),
      help="the size defaults (crops, batches, epochs, rates, walk length, DeepLab): voc12 = "
           "the reference's; toy = the embedded toy dataset's, also for a small VOC-layout root "
           "of your own; default: toy without --voc12_root, else the --dataset's")
    a("--toy_dataset", default="toy", choices=("toy", "parts"),
      help="the embedded synthetic dataset used when no dataset root is given (built on first "
           "use): toy = classes by colour and texture (data/toy_dataset.py), parts = classes by "
           "the shape of a small part on class-agnostic bodies, with look-alike distractors "
           "(data/toy_parts.py); parts outputs default to result/parts/ and sess/parts/")
    a("--voc12_root", default=None, type=str,
      help="VOC2012 folder (JPEGImages, SegmentationClass, ImageSets); default: the toy dataset")
    a("--coco14_root", default=None, type=str,
      help="COCO 2014 folder (train2014/, val2014/, annotations/); default with --dataset "
           "coco14: the toy dataset in COCO layout")
    a("--coco14_gt_dir", default=None, type=str,
      help="folder of ready semantic PNGs <id>.png (e.g. the published coco_seg_anno), scored "
           "instead of <coco14_root>/SegmentationClass14 written by the preparation")
    a("--cls_labels", default=None, type=str,
      help="image-level label CSV; default <voc12_root>/cls_labels.csv if present, "
           "else voc12/cls_labels.csv")
    a("--backbone_weights", default=None, type=str,
      help="torchvision-format ResNet-50 ImageNet weights (.pth); default for the toy dataset: "
           "the synthetic-data backbone, built and cached on first use")
    a("--device", default="auto", type=str, help="auto, cpu or cuda")
    a("--amp", default=None, type=bool_or_auto,
      help="mixed precision for the networks' forward passes (bf16 where the device has it, else "
           "fp16 with loss scaling; auto: only where the device computes bf16 natively); losses, "
           "merges and the random walk stay float32")
    a("--channels_last", default=None, type=str2bool,
      help="channels_last memory layout for the networks and their inputs")
    a("--deterministic", default=False, type=str2bool,
      help="deterministic kernels only (torch.use_deterministic_algorithms, cuDNN deterministic, "
           "no cuDNN benchmark): for GPUs, where some kernels are not; a CPU run is bit-identical "
           "at the same thread count without it (docs/toy.md, \"Determinism\")")
    a("--seed", default=0, type=int)
    a("--overwrite", default=False, type=str2bool, help="redo outputs that already exist")
    a("--checkpoint_every", default=None, type=int,
      help="train_cam, train_amn, train_irn: write a resumable training state every N steps "
           "(0: never)")
    a("--resume", default=True, type=str2bool,
      help="continue a killed train_cam/amn/irn from its state file (ignored with --overwrite True)")
    # Dataset
    a("--train_list", default=None, type=str,
      help="training list of train_cam/amn/irn and the maps' list; default voc12/train_aug.txt")
    a("--val_list", default=None, type=str, help="default voc12/val.txt")
    a("--infer_list", default=None, type=str,
      help="pseudo-mask list of make_sem_seg_labels and make_ins_seg_labels (and of train_irn's "
           "displacement mean); default voc12/train.txt")
    a("--chainer_eval_set", default="train", type=str)
    # Class activation map
    a("--cam_network", default="net.resnet50_cam", type=str)
    a("--cam_crop_size", default=None, type=int)
    a("--cam_resize_long", default=None, type=int, nargs=2)
    a("--cam_batch_size", default=None, type=int)
    a("--cam_num_epoches", default=None, type=int)
    a("--cam_learning_rate", default=None, type=float)
    a("--cam_frozen_stages", default=None, type=int, choices=(0, 1, 2, 3),
      help=profile_help("cam_frozen_stages", "backbone stages the CAM classifier keeps fixed "
                        "(conv1 and bn1 always are); the reference: 2"))
    a("--cam_weight_decay", default=1e-4, type=float)
    a("--poly_momentum", default=None, type=float,
      help="SGD momentum of the poly optimiser (train_cam, train_irn); -1 = the reference quirk "
           "(momentum = weight decay, docs/quirks.md)")
    a("--cam_eval_thres", default=0.25, type=float)
    a("--cam_scales", default=None, type=float, nargs="+",
      help="input scales of make_cam and make_amn_cam (with flips)")
    a("--infer_batch_size", default=None, type=int, help="equal-size images per forward pass")
    a("--sweep_thres", default=[round(0.05 * i, 2) for i in range(1, 20)], type=float, nargs="+",
      help="thresholds evaluated in the same pass as --cam_eval_thres")
    # AMN
    a("--amn_network", default="net.resnet50_amn", type=str)
    a("--amn_crop_size", default=None, type=int)
    a("--amn_batch_size", default=None, type=int)
    a("--amn_num_epoches", default=None, type=int)
    a("--amn_rescale", default=(0.5, 1.5), type=float, nargs=2)
    a("--amn_learning_rate", default=None, type=float,
      help="Adam lr of the backbone")
    a("--amn_head_learning_rate", default=None, type=float,
      help="Adam lr of the label encoder and the ASPP classifier")
    a("--amn_weight_decay", default=1e-4, type=float)
    a("--eps", default=0.4, type=float, help="label smoothing of the per-pixel loss")
    a("--amn_dropout", default=0.1, type=float, help="dropout before the ASPP classifier")
    a("--amn_monitor", default=False, type=str2bool,
      help="after each epoch, single-scale mIoU on --chainer_eval_set (the reference always does)")
    a("--amn_deterministic", default=False, type=str2bool,
      help="turn dropout off at AMN inference (the reference leaves it on: docs/quirks.md Q1)")
    # Mining inter-pixel relations
    a("--conf_fg_thres", default=None, type=float,
      help="when given, overrides the fg threshold of the IR-label step(s) run in this call")
    a("--conf_bg_thres", default=None, type=float, help="likewise for the bg threshold")
    a("--cam_conf_fg_thres", default=0.30, type=float, help="cam_to_ir_label (the script's 0.30)")
    a("--cam_conf_bg_thres", default=0.05, type=float, help="cam_to_ir_label (the script's 0.05)")
    a("--amn_conf_fg_thres", default=0.45, type=float, help="amn_cam_to_ir_label")
    a("--amn_conf_bg_thres", default=0.15, type=float, help="amn_cam_to_ir_label")
    # Inter-pixel relation network (IRNet)
    a("--irn_network", default="net.resnet50_irn", type=str)
    a("--irn_crop_size", default=None, type=int, help="also the padding size of IRN inference")
    a("--irn_batch_size", default=None, type=int)
    a("--irn_num_epoches", default=None, type=int)
    a("--irn_learning_rate", default=None, type=float)
    a("--irn_weight_decay", default=1e-4, type=float)
    # Random walk (typed, unlike the reference: docs/quirks.md Q13)
    a("--beta", default=10.0, type=float)
    a("--exp_times", default=None, type=int,
      help="the walk takes 2^exp_times steps")
    a("--sem_seg_power", default=1.3, type=float, help="power on the AMN seeds before the walk")
    a("--sem_seg_bg_thres", default=None, type=float)
    # Instance segmentation (docs/pipeline.md §3.12)
    a("--ins_seg_bg_thres", default=0.25, type=float,
      help="make_ins_seg_labels: background score against the normalised walk of the CAMs")
    a("--cocoann_from_sem_seg", default=False, type=str2bool,
      help="make_cocoann: export the semantic pseudo-masks (--sem_seg_out_dir) split into "
           "connected components instead of the instance labels (--ins_seg_out_dir)")
    a("--cocoann_min_score", default=0.0, type=float,
      help="make_cocoann: leave out segments scoring below this (instance scores are 0 for "
           "segments under 1%% of the image)")
    # Segmentation network (DeepLab-V2, docs/deeplab.md)
    a("--seg_backbone", default=None, choices=("resnet101", "resnet50"),
      help="DeepLab backbone")
    a("--seg_backbone_style", default="torchvision", choices=("torchvision", "caffe"),
      help="caffe: deeplab-pytorch / Caffe-origin weights converted by `python -m net.deeplabv2 "
           "convert` (stride in the 1x1, ceil-mode pool, BGR mean-subtracted input)")
    a("--seg_backbone_weights", default=None, type=str,
      help="ImageNet (or converted COCO) init of the DeepLab backbone; default for resnet50: "
           "--backbone_weights")
    a("--seg_label_dir", default=None, type=str,
      help="training labels (PNG 0..C, 255 ignored); default --sem_seg_out_dir; `gt` = "
           "SegmentationClass (fully supervised upper bound)")
    a("--seg_train_list", default=None, type=str,
      help="default --train_list (VOC: make_sem_seg must have run on it), the toy's --infer_list")
    a("--seg_eval_list", default=None, type=str, help="default --val_list")
    a("--seg_crop_size", default=None, type=int)
    a("--seg_scales", default=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0), type=float, nargs="+",
      help="training rescale factors, one drawn per sample (AdvCAM's set)")
    a("--seg_batch_size", default=None, type=int,
      help="images per update (in one pass)")
    a("--seg_num_iters", default=None, type=int)
    a("--seg_learning_rate", default=None, type=float,
      help="backbone lr; ASPP weights 10x, biases 20x")
    a("--seg_momentum", default=0.9, type=float)
    a("--seg_weight_decay", default=5e-4, type=float, help="not on the ASPP biases")
    a("--seg_poly_power", default=0.9, type=float)
    a("--seg_lr_decay", default=10, type=int, help="recompute the poly lr every N iterations")
    a("--seg_balanced_ce", default=True, type=str2bool,
      help="1/2 (bg mean + fg mean) cross-entropy (AdvCAM); False: plain CE")
    a("--seg_checkpoint_every", default=1000, type=int,
      help="write a resumable training state every N iterations (0: never)")
    a("--seg_resume", default=True, type=str2bool,
      help="continue a killed train_seg from its state file (ignored with --overwrite True)")
    a("--seg_channels_last", default=False, type=str2bool,
      help="channels_last for DeepLab (train_seg, eval_seg); off by default: its dilated 3x3 "
           "convolutions ran slower in it (bf16 on a 2-core CPU: 0.54 vs 0.43 s per toy "
           "iteration), while the other networks gain from --channels_last")
    a("--seg_tf32", default=True, type=str2bool,
      help="allow TF32 convolutions / matmuls on CUDA (PyTorch's conv default); False: strict fp32")
    a("--seg_infer_scales", default=(1.0,), type=float, nargs="+",
      help="input scales at inference, each through the MSC network (reference: 1.0 only)")
    a("--seg_infer_flip", default=False, type=str2bool,
      help="also infer on the mirrored image (reference: no)")
    a("--seg_crf", default=True, type=str2bool, help="dense CRF on the predictions")
    a("--seg_crf_params", default=(10, 3, 1, 4, 67, 3), type=float, nargs=6,
      metavar=("ITER", "POS_W", "POS_XY", "BI_W", "BI_XY", "BI_RGB"),
      help="deeplab-pytorch's CRF values")
    a("--seg_test_list", default=None, type=str,
      help="also export predictions for this list (no GT), e.g. voc12/test.txt")
    # Output paths
    a("--log_name", default="sample_train_eval", type=str)
    a("--cam_weights_name", default="sess/res50_cam.pth", type=str)
    a("--cam_out_dir", default="result/cam", type=str)
    a("--ir_label_out_dir", default="result/ir_label", type=str)
    a("--amn_weights_name", default="sess/res50_amn.pth", type=str)
    a("--amn_cam_out_dir", default="result/amn_cam", type=str)
    a("--amn_ir_label_out_dir", default="result/amn_ir_label", type=str)
    a("--irn_weights_name", default="sess/res50_irn.pth", type=str)
    a("--sem_seg_out_dir", default="result/sem_seg", type=str)
    a("--ins_seg_out_dir", default="result/ins_seg", type=str)
    a("--cocoann_out_dir", default="result", type=str,
      help="make_cocoann writes <dir>/instances_<infer list name>_pseudo.json")
    a("--seg_weights_name", default="sess/deeplabv2.pth", type=str)
    a("--seg_pred_out_dir", default="result/seg_pred", type=str)
    a("--seg_gt_weights_name", default="sess/deeplabv2_gt.pth", type=str,
      help="train_seg_gt: DeepLab trained on the ground truth of --seg_train_list")
    a("--seg_gt_pred_out_dir", default="result/seg_pred_gt", type=str,
      help="eval_seg_gt: that DeepLab's predictions")
    a("--seg_test_out_dir", default="results/VOC2012/Segmentation/comp6_test_cls", type=str)
    a("--metrics_file", default="result/metrics.jsonl", type=str)
    # Step
    for name in STEPS:
        a(f"--{name}_pass", default=None, type=str2bool)
    for action in p._actions:  # one source for the per-profile defaults
        if action.dest in PROFILES["voc12"]:
            action.help = profile_help(action.dest, action.help or "")
    return p


def prepare_toy(args: argparse.Namespace) -> None:
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


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill dataset- and profile-dependent defaults; build the toy dataset and backbone when no
    root is given; check the dataset root before anything is written."""
    toy = getattr(args, ROOT_FLAGS[args.dataset]) is None
    separate_outputs(args)  # before prepare_toy sets the root: it reads whether one was given
    if toy:
        prepare_toy(args)
    from step.common import dataset
    from voc12.dataloader import default_cls_labels
    if args.dataset == "voc12" and args.cls_labels is None:
        args.cls_labels = str(default_cls_labels(Path(args.voc12_root)))
    data = dataset(args)  # fail fast on a bad root
    own_lists = toy or args.dataset == "coco14"  # a COCO root may carry <split>14.txt lists
    for flag, path in DATASET_LISTS[args.dataset].items():
        if getattr(args, flag) is None:
            split = SPLIT_OF[args.dataset][flag]
            setattr(args, flag, str(data.split_list(split) if own_lists else REPO / path))
    if args.seg_train_list is None:  # the toy chain makes pseudo-masks for its infer list only
        args.seg_train_list = args.infer_list if toy else args.train_list
    args.profile = args.profile or ("toy" if toy else args.dataset)
    for key, value in PROFILES[args.profile].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.amp == "auto":
        from misc.engine.precision import native_bf16
        args.amp = native_bf16(args.device)
    if args.poly_momentum < 0:
        args.poly_momentum = None  # PolyOptimizer's reference quirk
    for kind in ("fg", "bg"):  # the reference's shared flags override the per-step values
        if getattr(args, f"conf_{kind}_thres") is not None:
            for step in ("cam", "amn"):
                setattr(args, f"{step}_conf_{kind}_thres", getattr(args, f"conf_{kind}_thres"))
    passes = {name: getattr(args, f"{name}_pass") for name in STEPS}
    run_all = all(v is None for name, v in passes.items() if name not in OPTIONAL_STEPS)
    for name in STEPS:
        setattr(args, f"{name}_pass", bool(passes[name]) or (run_all and name not in OPTIONAL_STEPS))
    args.resume_chain = run_all and not args.overwrite
    return args


def output_subfolder(args: argparse.Namespace) -> str | None:
    """The folder between result/ (sess/) and the outputs: the dataset unless voc12, then
    `parts` for the embedded parts dataset (result/coco14/parts/...); None for VOC and the toy."""
    folders = [args.dataset] if args.dataset != "voc12" else []
    if args.toy_dataset == "parts" and getattr(args, ROOT_FLAGS[args.dataset]) is None:
        folders.append("parts")
    return "/".join(folders) or None


def separate_outputs(args: argparse.Namespace) -> None:
    """Outputs of a dataset other than voc12, or of the embedded parts dataset, go to
    result/<subfolder>/ and sess/<subfolder>/ unless their flags are given: VOC, COCO, the toy and
    parts outputs never share a folder."""
    folder = output_subfolder(args)
    if folder is None:
        return
    defaults = build_parser().parse_args([])
    for key, value in vars(args).items():
        if (is_output_flag(key) and value == getattr(defaults, key)
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


# training passes and the checkpoint each writes: a whole-chain rerun skips finished ones
TRAINED = {"train_cam": "cam_weights_name", "train_amn": "amn_weights_name",
           "train_irn": "irn_weights_name", "train_seg": "seg_weights_name",
           "train_seg_gt": "seg_gt_weights_name"}


def already_trained(args: argparse.Namespace, name: str) -> bool:
    """In a whole-chain run (no *_pass flags, no --overwrite), a training step whose checkpoint
    exists and was trained from the current inputs (its record) is not redone; explicit passes
    always run."""
    from misc.engine.log import log
    from step.common import trained_from_other_inputs
    if not (args.resume_chain and name in TRAINED and Path(getattr(args, TRAINED[name])).is_file()):
        return False
    reason = trained_from_other_inputs(args, name)
    if reason:
        log(f"{name}: {reason}: retraining")
    return reason is None


PACKAGES = ("torch", "numpy", "scipy", "Pillow", "imageio", "matplotlib", "pydensecrf2", "tqdm")


def save_run_config(args: argparse.Namespace) -> None:
    """result/run_config.json: this call's command, resolved flags, package versions and git
    commit (also appended to result/runs.jsonl, the history of every call)."""
    import subprocess
    from importlib import metadata

    import torch

    from misc.io.atomic import atomic_path
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


def output_folders(args: argparse.Namespace) -> dict[str, Path]:
    """Every folder the steps write into (checkpoints, maps, labels, predictions, metrics),
    by the flag that names it (--seg_label_dir too: train_seg reads labels from it)."""
    files = {k: Path(v).parent for k, v in vars(args).items()
             if k.endswith("_weights_name") or k == "metrics_file"}
    dirs = {k: Path(v) for k, v in vars(args).items() if k.endswith("_out_dir")}
    if args.seg_label_dir and args.seg_label_dir != "gt":
        dirs["seg_label_dir"] = Path(args.seg_label_dir)
    return {f"--{k}": v for k, v in {**files, **dirs}.items()}


def draw_examples(args: argparse.Namespace, out_png: Path, n: int = 4) -> Path | None:
    """The first `n` images of the infer list with their CAM, AMN map, pseudo-mask, GT and
    instance labels."""
    from misc.report.run_report import plot_examples
    from step.common import dataset, id_list
    data = dataset(args)
    ids = id_list(args.infer_list)[:n]
    return plot_examples({i: data.image_path(i) for i in ids},
                         {"CAM": args.cam_out_dir, "AMN": args.amn_cam_out_dir},
                         {"pseudo-mask": args.sem_seg_out_dir, "ground truth": data.gt_dir()},
                         out_png, instance_dirs={"instances": args.ins_seg_out_dir})


def start_run(args: argparse.Namespace) -> None:
    """Before any step: the process group, the lock on the output folders, the run's record and
    log, and the clean-up of temporaries a killed run left behind. Only rank 0 locks and writes;
    when it fails (e.g. the folders are in use) every rank stops.

    Locked (misc/io/lock.py): the folder of --metrics_file, which every call writes (run_config,
    runs.jsonl, metrics, the report) and which holds the map and label folders by default, and
    the checkpoint folder of each training pass of this call (its state files), so the same
    command twice always meets on a lock. Per-image folders given outside the metrics folder
    are not locked on their own."""
    import shlex

    from misc.engine import dist
    from misc.engine.log import log, tee_stdout
    from misc.io.atomic import remove_stale_temporaries
    from misc.io.dataset_tag import claim_folders
    from misc.io.lock import lock_folders
    from step.common import device
    device(args)  # torchrun: set up the process group once, before any step
    error = None
    if dist.is_main():
        try:
            trained = [Path(getattr(args, flag)).parent for name, flag in TRAINED.items()
                       if getattr(args, f"{name}_pass")]
            command = shlex.join([Path(sys.executable).name, *sys.argv])
            lock_folders([Path(args.metrics_file).parent, *trained], command,
                         hint="Or give this run other output folders (--metrics_file, "
                              "--*_weights_name).")
            claim_folders(output_folders(args), args.dataset)  # before anything is written
            save_run_config(args)
            tee_stdout(f"{args.log_name}.log")
            log(" ".join(sys.argv))
            removed = remove_stale_temporaries(list(output_folders(args).values()))
            if removed:
                log(f"removed {removed} temporary files left by an interrupted run")
        except Exception as err:  # every rank must hear of it, or the others wait forever
            error = err
    if not dist.agree(error is None):
        raise error or RuntimeError("rank 0 stopped before the first step; its message says why")
    dist.barrier()  # no rank writes before the clean-up is done


def finish_run(args: argparse.Namespace, timings: dict[str, float]) -> None:
    """After the steps: result/report.md with its pictures, and the table printed; then the
    output folders are unlocked (a run that fails keeps them until its process ends)."""
    from misc.engine import dist
    from misc.engine.log import log
    from misc.io.dataset_tag import claim_folders
    from misc.io.lock import release
    from misc.report.run_report import write_report
    try:
        if dist.is_main():
            claim_folders(output_folders(args), args.dataset)  # the folders the steps made
            report = Path(args.metrics_file).parent / "report.md"
            table = write_report(args.metrics_file, timings, report, list(STEPS.values()),
                                 examples_png=draw_examples(args, report.with_name("examples.png")))
            log("\n" + table)
            log(f"report: {report} (with threshold_curves.png, examples.png)")
    finally:
        release()


def main(argv: list[str] | None = None) -> dict:
    args = resolve(build_parser().parse_args(argv))
    start_run(args)
    from misc.engine.log import log
    from step.plan import verify
    # every input of the passes that run, before the first one (docs/README.md "Plan check")
    verify(args, kept=[name for name in STEPS
                       if getattr(args, f"{name}_pass") and already_trained(args, name)])
    from step import common
    timings, results = {}, {}
    for name, module in STEPS.items():
        if getattr(args, f"{name}_pass"):
            if already_trained(args, name):
                log(f"== {module}: {getattr(args, TRAINED[name])} exists, kept "
                            f"(--overwrite True to retrain)")
                continue
            log(f"== {module}")
            start = time.time()
            with common.recorded_outputs(args, name):
                results[module] = importlib.import_module(f"step.{module}").run(args)
            timings[module] = time.time() - start
    finish_run(args, timings)
    return {"timings": timings, "results": results}


if __name__ == "__main__":
    main()
