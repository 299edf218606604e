"""train_seg_cp: PMM's second segmentation round (docs/pmm.md §9): a fresh DeepLab-V2 from the
same initial weights and recipe as train_seg, trained without PUF on make_seg_cp's masks, into
its own checkpoint (resumable as train_seg). Optional: --train_seg_cp_pass True."""
from __future__ import annotations

import argparse

from step import train_seg
from step.driver import context
from step.driver.interface import Files, Flag, Step

PUF_FLAGS = ("seg_puf", "seg_puf_beta", "seg_puf_k")  # read but off in this round

STEP = Step(
    "train_seg_cp", "DeepLab-V2 round 2 on the cyclic pseudo-masks, without PUF",
    flags=(Flag("seg_cp_weights_name", default="sess/deeplabv2_cp.pth", shapes=False),),
    uses=tuple(f.name for f in train_seg.STEP.flags if f.name not in PUF_FLAGS)
    + train_seg.STEP.uses,
    also_reads=PUF_FLAGS + ("seg_cp_pred_out_dir",),  # the derived flags of context.cyclic_round
    reads=(Files("seg_cp_out_dir", "seg_train_list", noun="CP training label"),
           Files("seg_backbone_weights")),
    writes=(Files("seg_cp_weights_name"),), batch="seg_batch_size",
    trains_on=("seg_train_list",), images=("seg_train_list",), optional=True)


def run(args: argparse.Namespace) -> dict:
    return train_seg.run(context.cyclic_round(args), step="train_seg_cp")
