"""`python tests/ddp_record.py <run_sample flags>` (alone or under torchrun): run_sample.main,
recording for every training step of train_cam / train_amn / train_irn the (rank, world size) the process
sees and the names of the samples its loss receives. Writes $RECORD_DIR/rank<RANK>.json."""
import json
import os
import sys
from pathlib import Path

import run_sample
import step.train_amn
import step.train_cam
import step.train_irn
from misc.engine import dist


def _recording(train, records: list):
    def wrapped(model, loss_fn, *args, **kwargs):
        def loss(m, batch):
            records.append({"world": list(dist.world()), "names": list(batch["name"])})
            return loss_fn(m, batch)
        return train(model, loss, *args, **kwargs)
    return wrapped


def main() -> None:
    records: list = []
    for module in (step.train_cam, step.train_amn, step.train_irn):
        module.train = _recording(module.train, records)
    run_sample.main(sys.argv[1:])
    out = Path(os.environ["RECORD_DIR"]) / f"rank{os.environ.get('RANK', '0')}.json"
    out.write_text(json.dumps({"world_size_env": int(os.environ.get("WORLD_SIZE", "1")),
                               "steps": records}))


if __name__ == "__main__":
    main()
