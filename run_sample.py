"""Driver of the pipeline, with the reference run_sample.py's flags.

    python run_sample.py                        # toy dataset (built on first use), every pass
    python run_sample.py --voc12_root VOC2012 --train_cam_pass True --make_cam_pass True ...
    torchrun --nproc_per_node 4 run_sample.py --voc12_root VOC2012 --train_cam_pass True

With no *_pass flag every pass runs in pipeline order (but the optional ones), keeping the
outputs and checkpoints that still match their records; with some, only those. Each pass is a
module of step/ that declares its flags, inputs and outputs (docs/pipeline.md §2.10, and
docs/flags.md for every flag).
"""
from __future__ import annotations

import sys
import time

from misc.engine.log import log
from misc.engine.precision import strict_float32
from step import (
    amn_cam_to_ir_label,
    cam_to_ir_label,
    eval_amn_cam,
    eval_bao,
    eval_bao_amn,
    eval_cam,
    eval_ins_seg,
    eval_seg,
    eval_seg_cp,
    eval_seg_gt,
    eval_sem_seg,
    eval_transcam,
    make_amn_cam,
    make_bao,
    make_bao_amn,
    make_cam,
    make_cocoann,
    make_ins_seg_labels,
    make_seg_cp,
    make_sem_seg_labels,
    make_transcam,
    train_amn,
    train_bao,
    train_bao_amn,
    train_cam,
    train_irn,
    train_seg,
    train_seg_cp,
    train_seg_gt,
    train_transcam,
)
from step.driver.flags import Flags, build_parser, reads_during
from step.driver.plan import verify
from step.driver.provenance import Pipeline, undeclared
from step.driver.resolve import parse, resolve
from step.driver.workspace import (
    already_trained,
    command_line,
    finish_run,
    given_by_hand,
    start_run,
    unread_notes,
)

# the passes, in pipeline order
PIPELINE = Pipeline.of([
    train_cam, make_cam, eval_cam, cam_to_ir_label,                      # CAM
    train_amn, make_amn_cam, eval_amn_cam, amn_cam_to_ir_label,          # AMN
    train_bao_amn, make_bao_amn, eval_bao_amn,                           # BAO on AMN (optional)
    train_irn, make_ins_seg_labels, eval_ins_seg, make_sem_seg_labels,   # IRN
    eval_sem_seg, make_cocoann,
    train_seg, eval_seg, train_seg_gt, eval_seg_gt,                      # DeepLab-V2
    make_seg_cp, train_seg_cp, eval_seg_cp,                              # PMM's CP (optional)
    train_transcam, make_transcam, eval_transcam,                        # TransCAM (optional)
    train_bao, make_bao, eval_bao,                                       # BAO (optional)
])


def parser():
    """The argparse parser of every flag, one group per pass (for --help and the tests)."""
    return build_parser(PIPELINE.steps.values(), __doc__)


def resolved(argv: list[str] | None = None) -> Flags:
    """The flags of a call, every default filled in."""
    return resolve(PIPELINE, parse(PIPELINE, argv, __doc__))


def run_pass(args: Flags, name: str) -> dict:
    """One pass, between its provenance checks; the flags it reads must be declared."""
    # every pass starts from strict float32 (docs/gpu_check.md, "TF32"); its own choices end with it
    with PIPELINE.recorded_outputs(args, name), reads_during() as read, strict_float32():
        result = PIPELINE.modules[name].run(args)
        unknown = undeclared(PIPELINE, name, read)
        if unknown:  # their values would be missing from the outputs' records
            raise RuntimeError(f"{name} read flags its declaration does not name: {unknown}; "
                               f"add them to STEP's flags or uses in its module")
    return result


def main(argv: list[str] | None = None) -> dict:
    args = resolved(argv)
    passes = [name for name in PIPELINE.steps if getattr(args, f"{name}_pass")]
    kept = [name for name in passes if already_trained(PIPELINE, args, name)]
    start_run(PIPELINE, args, [name for name in passes if name not in kept])
    verify(PIPELINE, args, kept=kept)  # every input of the passes, before the first one
    notes = given_by_hand(PIPELINE, args, passes) + unread_notes(PIPELINE, argv, passes)
    timings, results = {}, {}
    for name in passes:
        module = PIPELINE.modules[name].__name__.rsplit(".", 1)[-1]
        if name in kept:
            log(f"== {module}: {getattr(args, PIPELINE.steps[name].writes[0].flag)} matches "
                f"its record, kept (--overwrite True to retrain)")
            continue
        log(f"== {module}")
        start = time.time()
        results[module] = run_pass(args, name)
        timings[module] = time.time() - start
    finish_run(PIPELINE, args, timings, notes)
    return {"timings": timings, "results": results}


if __name__ == "__main__":
    sys.exit(command_line(main))
