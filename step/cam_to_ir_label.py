"""cam_to_ir_label: CAMs -> confident IR labels with two dense-CRF passes (spec §2.5, §3.4)."""
from __future__ import annotations

import argparse

from misc import dist, session
from misc.ir_label import make_ir_labels


def run(args: argparse.Namespace) -> dict:
    root, _ = session.dataset(args)
    ids = dist.shard(session.id_list(args.train_list))
    stats = make_ir_labels(ids, args.cam_out_dir, root.root / "JPEGImages", args.ir_label_out_dir,
                           args.conf_fg_thres, args.conf_bg_thres, drop_background_channel=False,
                           num_workers=args.num_workers, overwrite=args.overwrite)
    session.log(f"cam_to_ir_label: {stats} -> {args.ir_label_out_dir}")
    dist.barrier()
    return stats
