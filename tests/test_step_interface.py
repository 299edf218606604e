"""The steps' declarations and what the driver derives from them: records that hold every
shaping flag (training included), no stale checkpoint or resumable state, folders that hold one
record's files, profiles as files, exact flag names, and docs/flags.md kept current."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import run_sample
from misc.engine.train import state_path, train
from misc.io.records import end_output, read_record, write_record
from step.driver.workspace import already_trained
from tests.ddp_tiny_train import Points, network
from tests.test_faults import _mse
from tests.tiny import REPO, flags


def _resolve(argv: list[str]):
    return run_sample.resolved(argv)


def _record_as_made(args, name: str) -> None:
    """Mark the checkpoint of training pass `name` as made under `args` (a finished run)."""
    checkpoint = Path(getattr(args, run_sample.PIPELINE.steps[name].writes[0].flag))
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"weights")
    end_output(checkpoint, run_sample.PIPELINE.expected_record(args, name))


def test_a_changed_hyperparameter_or_train_list_retrains(fake_voc, tmp_path, r50):
    """The issue's scenario: a whole-chain rerun with another --cam_learning_rate (or a shorter
    train list) does not keep sess/res50_cam.pth, and says why."""
    base = flags(fake_voc, tmp_path, r50)
    args = _resolve(base)
    _record_as_made(args, "train_cam")
    assert already_trained(run_sample.PIPELINE, args, "train_cam")
    changed = _resolve(base + ["--cam_learning_rate", "0.05"])
    assert not already_trained(run_sample.PIPELINE, changed, "train_cam")
    reason = run_sample.PIPELINE.retrain_reason(changed, "train_cam")
    assert reason.startswith(f"--cam_learning_rate {args.cam_learning_rate} -> 0.05 since "
                             f"{args.cam_weights_name} was made")
    short = tmp_path / "short.txt"
    short.write_text("\n".join(Path(args.train_list).read_text().split()[:3]) + "\n")
    shorter = _resolve(base + ["--train_list", str(short)])
    assert f"{short} changed" in run_sample.PIPELINE.retrain_reason(shorter, "train_cam")
    assert already_trained(run_sample.PIPELINE, _resolve(base + ["--num_workers", "0"]),
                           "train_cam")  # a flag that shapes nothing keeps it


def test_training_records_hold_the_hyperparameters_and_the_lists(fake_voc, tmp_path, r50):
    args = _resolve(flags(fake_voc, tmp_path, r50))
    record = run_sample.PIPELINE.expected_record(args, "train_irn")
    assert {"irn_learning_rate", "irn_batch_size", "irn_num_epoches", "irn_crop_size", "seed",
            "poly_momentum", "amp"} <= set(record["settings"])
    assert {"num_workers", "overwrite", "irn_weights_name"}.isdisjoint(record["settings"])
    assert set(record["inputs"]) == {"irn_label_dir", "backbone_weights", "train_list",
                                     "infer_list"}
    assert record["inputs"]["train_list"]["sha256"] is not None


def test_the_stale_checkpoint_scenario_end_to_end(tiny_toy, tmp_path, r50, capsys):
    """train_cam, then a whole-chain run's decision with another learning rate: retrained
    with the reason in the log, and the new record holds the new rate."""
    base = flags(tiny_toy, tmp_path, r50) + ["--train_cam_pass", "True"]
    run_sample.main(base)
    first = read_record(tmp_path / "sess" / "res50_cam.pth")
    assert first["complete"] and first["settings"]["cam_learning_rate"] == 0.1
    capsys.readouterr()
    run_sample.main(base + ["--cam_learning_rate", "0.05"])
    assert ("train_cam: --cam_learning_rate 0.1 -> 0.05 since "
            f"{tmp_path / 'sess' / 'res50_cam.pth'} was made: retraining") in capsys.readouterr().out
    assert read_record(tmp_path / "sess" / "res50_cam.pth")["settings"]["cam_learning_rate"] == 0.05


def test_a_resumable_state_of_other_settings_is_set_aside(tmp_path, capsys):
    """A state file written towards another record (a killed run of other settings) is never
    resumed from: it is moved aside and training starts afresh."""
    out = tmp_path / "net.pth"

    def run(record_id: str, loss_fn) -> None:
        write_record(out, {"id": record_id}, complete=False)  # as the driver does first
        model = network()
        train(model, loss_fn, Points(), 4, 3, lambda _: torch.optim.Adam(model.parameters()),
              torch.device("cpu"), out, desc="train_tiny", checkpoint_every=3, resume=True)

    with pytest.raises(RuntimeError):  # stops at step 6, its state of step 3 kept
        run("other", _mse(nan_at=5))
    assert torch.load(state_path(out), weights_only=True)["record"] == "other"
    capsys.readouterr()
    run("mine", _mse())
    text = capsys.readouterr().out
    assert "was written by a run with other inputs or flags than this one's: set aside" in text
    assert "resumed from" not in text
    assert (tmp_path / "net.state.set-aside.pth").exists() and not state_path(out).exists()
    assert len((tmp_path / "net.losses.csv").read_text().split()) == 12 + 1  # from step 0


def test_a_remade_folder_holds_one_records_files(tiny_toy, tmp_path, r50, capsys):
    """make_cam on 3 ids with other scales, after the full list: the other ids' old maps are
    removed, so the folder's record describes every file, and a reader of the full list is told
    to make the missing ones."""
    base = flags(tiny_toy, tmp_path, r50)
    run_sample.main(base + ["--train_cam_pass", "True", "--make_cam_pass", "True"])
    ids = Path(_resolve(base).train_list).read_text().split()
    short = tmp_path / "short.txt"
    short.write_text("\n".join(ids[:3]) + "\n")
    capsys.readouterr()
    run_sample.main(base + ["--make_cam_pass", "True", "--cam_scales", "1.0",
                            "--train_list", str(short)])
    out = capsys.readouterr().out
    assert f"make_cam: removed {len(ids) - 3} .npz files of {tmp_path / 'cam'}" in out
    assert sorted(p.stem for p in (tmp_path / "cam").glob("*.npz")) == sorted(ids[:3])
    record = read_record(tmp_path / "cam")
    assert record["complete"] and record["settings"]["cam_scales"] == [1.0]
    with pytest.raises(ValueError, match=f"no CAM for {len(ids) - 3} of {len(ids)} ids"):
        run_sample.main(base + ["--cam_to_ir_label_pass", "True", "--cam_scales", "1.0"])


def test_a_checkpoint_given_by_hand_is_used_as_given_and_reported(tiny_toy, tmp_path, r50):
    """A checkpoint without a record (e.g. a released reference checkpoint) is read as it
    is, and the report says so."""
    from net import resnet50_cam
    n_classes = len((tiny_toy / "class_names.txt").read_text().split())
    cam = tmp_path / "sess" / "res50_cam.pth"
    cam.parent.mkdir()
    torch.save(resnet50_cam.Net(n_classes).state_dict(), cam)
    run_sample.main(flags(tiny_toy, tmp_path, r50) + ["--make_cam_pass", "True"])
    report = (tmp_path / "report.md").read_text()
    assert f"- {cam} (--cam_weights_name) has no record of what made it: used as given by " \
           f"make_cam" in report
    assert read_record(tmp_path / "cam")["inputs"]["cam_weights_name"]["sha256"]


def test_a_backbone_cache_without_its_summary_is_used_as_given(tmp_path):
    from data.pretrain_backbone import ensure_pretrained_backbone
    cache = tmp_path / "r50.pth"
    cache.write_bytes(b"weights")
    said = []
    assert ensure_pretrained_backbone(cache, steps=2, log=said.append) == cache
    assert said == [f"{cache} has no record of how it was pretrained (r50.json is missing): "
                    f"used as given"] and cache.read_bytes() == b"weights"


def test_a_pass_reading_an_undeclared_flag_stops(fake_voc, tmp_path, r50, monkeypatch):
    module = run_sample.PIPELINE.modules["eval_cam"]
    monkeypatch.setattr(module, "run", lambda args: args.sem_seg_power)
    args = _resolve(flags(fake_voc, tmp_path, r50))
    with pytest.raises(RuntimeError, match=r"eval_cam read flags its declaration does not "
                                           r"name: \['sem_seg_power'\]"):
        run_sample.run_pass(args, "eval_cam")


def test_flags_are_matched_exactly(capsys):
    with pytest.raises(SystemExit):
        run_sample.resolved(["--train_cam_pas", "True"])
    assert "error: unknown flag --train_cam_pas (did you mean --train_cam_pass?)" \
        in capsys.readouterr().err


def test_a_config_file_is_a_profile_of_ones_own(fake_voc, tmp_path):
    """--config: any flag's value over the profile it names; the command line wins; an
    unknown key is an error that suggests the right name."""
    config = tmp_path / "mine.toml"
    config.write_text('profile = "toy"\ncam_crop_size = 96\ncam_scales = [1.0, 2.0]\n')
    args = _resolve(["--voc12_root", str(fake_voc), "--config", str(config),
                     "--cam_batch_size", "4"])
    assert args.profile == "toy" and args.cam_crop_size == 96 and args.cam_batch_size == 4
    assert args.cam_scales == (1.0, 2.0) and args.exp_times == 4  # the rest: the toy profile
    config.write_text("cam_crop_sise = 96\n")
    with pytest.raises(ValueError, match=r"unknown flag\(s\) cam_crop_sise \(did you mean "
                                         r"cam_crop_size\?\)"):
        _resolve(["--voc12_root", str(fake_voc), "--config", str(config)])


def test_help_reads_as_the_pipeline():
    titles = [g.title for g in run_sample.parser()._action_groups][2:]
    assert titles == ["shared"] + list(run_sample.PIPELINE.steps)


def test_the_flags_doc_is_current():
    """docs/flags.md is generated from the declarations (`python -m tests.test_step_interface`
    rewrites it)."""
    from step.driver.flags import markdown_table
    assert (REPO / "docs" / "flags.md").read_text() == \
        markdown_table(run_sample.PIPELINE.steps.values()) + "\n"


def test_every_checkpoint_record_names_its_step(tmp_path):
    """A record's JSON is what misc.io.records writes (a smoke test of the files' format)."""
    write_record(tmp_path / "x.pth", {"step": "train_cam", "id": "1"}, complete=True)
    assert json.loads((tmp_path / "x.pth.record.json").read_text())["step"] == "train_cam"


if __name__ == "__main__":
    from step.driver.flags import markdown_table
    (REPO / "docs" / "flags.md").write_text(markdown_table(run_sample.PIPELINE.steps.values())
                                            + "\n")
