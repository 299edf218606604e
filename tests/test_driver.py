"""run_sample.py's flag resolution: profiles, pass selection, whole-chain resume."""
import torch

import run_sample
from step.driver.flags import PROFILE_FILES, load_profile
from step.driver.workspace import already_trained


def _resolve(argv):
    return run_sample.resolved(argv)


def test_no_pass_flag_runs_everything_and_resumes_training(fake_voc, tmp_path):
    weights = tmp_path / "cam.pth"
    args = _resolve(["--voc12_root", str(fake_voc), "--cam_weights_name", str(weights)])
    assert all(getattr(args, f"{name}_pass") for name, step in run_sample.PIPELINE.steps.items()
               if not step.optional)
    assert not already_trained(run_sample.PIPELINE, args, "train_cam")
    weights.write_bytes(b"x")
    assert already_trained(run_sample.PIPELINE, args, "train_cam")
    assert not already_trained(run_sample.PIPELINE, args, "make_cam")  # inference steps skip per image


def test_explicit_pass_or_overwrite_always_retrains(fake_voc, tmp_path):
    weights = tmp_path / "cam.pth"
    weights.write_bytes(b"x")
    base = ["--voc12_root", str(fake_voc), "--cam_weights_name", str(weights)]
    args = _resolve(base + ["--train_cam_pass", "True"])
    assert args.train_cam_pass and not args.make_cam_pass
    assert not already_trained(run_sample.PIPELINE, args, "train_cam")
    assert not already_trained(run_sample.PIPELINE, _resolve(base + ["--overwrite", "True"]), "train_cam")


def test_voc_profile_keeps_reference_defaults(fake_voc):
    args = _resolve(["--voc12_root", str(fake_voc)])
    assert (args.cam_crop_size, args.cam_batch_size, args.cam_learning_rate) == (512, 16, 0.1)
    assert args.poly_momentum is None  # the reference quirk (momentum = weight decay)
    assert (args.exp_times, args.beta, args.sem_seg_bg_thres) == (8, 10.0, 0.25)
    assert (args.cam_conf_fg_thres, args.amn_conf_fg_thres) == (0.30, 0.45)
    args = _resolve(["--voc12_root", str(fake_voc), "--conf_fg_thres", "0.4"])
    assert args.cam_conf_fg_thres == args.amn_conf_fg_thres == 0.4


def test_profile_by_name_for_a_small_voc_layout_root(fake_voc):
    """--profile toy gives a VOC-layout root of one's own the toy sizes in one flag; an explicit
    size flag still wins over the profile."""
    args = _resolve(["--voc12_root", str(fake_voc), "--profile", "toy", "--irn_batch_size", "4"])
    toy = load_profile("toy")
    assert args.profile == "toy" and args.irn_batch_size == 4
    assert (args.cam_crop_size, args.exp_times, args.seg_backbone) == (
        toy["cam_crop_size"], toy["exp_times"], toy["seg_backbone"]) == (128, 4, "resnet50")
    assert args.poly_momentum == 0.9
    assert _resolve(["--voc12_root", str(fake_voc)]).profile == "voc12"


def test_help_texts_come_from_the_profiles():
    helps = {a.dest: a.help for a in run_sample.parser()._actions}
    for key in load_profile("voc12"):
        for name in PROFILE_FILES:
            value = load_profile(name)[key]
            shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            assert f"{shown} ({name})" in helps[key], (key, helps[key])
    assert "3 (voc12), 3 (coco14), 5 (toy)" in helps["irn_num_epoches"]


def test_network_flags_import_the_named_module(fake_voc, tmp_path, monkeypatch):
    """--cam_network / --amn_network / --irn_network name a module whose `Net` is used, as in
    the reference; a module that cannot be imported or has no Net is a clear error."""
    import pytest

    from step.driver import context
    (tmp_path / "my_cam.py").write_text("from net.resnet50_cam import Net as _Base\n\n"
                                        "class Net(_Base):\n    custom = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert context.network("my_cam", "--cam_network").custom
    (tmp_path / "no_net.py").write_text("X = 1\n")
    with pytest.raises(ValueError, match="--amn_network no_net: the module has no class Net"):
        context.network("no_net", "--amn_network")
    with pytest.raises(ValueError, match="--irn_network net.nothing_here: cannot import"):
        context.network("net.nothing_here", "--irn_network")


def test_amp_and_layout_defaults_by_profile(fake_voc):
    """float32 for the reference profiles; the toy profile takes bf16 where the device computes
    it natively (auto) and channels_last; explicit flags win."""
    from misc.engine.precision import native_bf16
    args = _resolve(["--voc12_root", str(fake_voc), "--device", "cpu"])
    assert (args.amp, args.channels_last) == (False, False)
    args = _resolve(["--voc12_root", str(fake_voc), "--device", "cpu", "--profile", "toy"])
    assert (args.amp, args.channels_last) == (native_bf16("cpu"), True)
    args = _resolve(["--voc12_root", str(fake_voc), "--profile", "toy", "--amp", "False"])
    assert args.amp is False


def test_deterministic_flag_limits_torch_to_deterministic_kernels(fake_voc):
    from step.driver import context
    args = _resolve(["--voc12_root", str(fake_voc), "--device", "cpu"])
    context.device(args)
    assert not args.deterministic and not torch.are_deterministic_algorithms_enabled()
    args = _resolve(["--voc12_root", str(fake_voc), "--device", "cpu", "--deterministic", "True"])
    try:
        context.device(args)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_ground_truth_deeplab_passes_only_join_when_asked(fake_voc):
    base = ["--voc12_root", str(fake_voc)]
    args = _resolve(base)
    assert args.train_seg_pass and args.eval_seg_pass and args.resume_chain
    assert not args.train_seg_gt_pass and not args.eval_seg_gt_pass
    args = _resolve(base + ["--train_seg_gt_pass", "True", "--eval_seg_gt_pass", "True"])
    assert args.train_cam_pass and args.train_seg_pass and args.resume_chain  # whole chain too
    assert args.train_seg_gt_pass and args.eval_seg_gt_pass
    args = _resolve(base + ["--eval_seg_gt_pass", "True", "--eval_seg_pass", "True"])
    assert args.eval_seg_gt_pass and not args.train_seg_gt_pass and not args.train_cam_pass


def test_the_toy_conformer_is_built_only_when_a_pass_reading_it_runs(fake_voc, r50, monkeypatch):
    """No dataset root: --conformer_weights stays unset (nothing built) unless train_transcam,
    its one reader, runs; then it names the synthetic Conformer-S cache, built on first use.
    A given value, or a dataset root of one's own, is left alone."""
    import data.pretrain_backbone as pb
    from step.driver import resolve

    def toy(args):  # the toy's root and ResNet backbone without building them
        args.voc12_root, args.backbone_weights = str(fake_voc), str(r50)

    built = []
    monkeypatch.setattr(resolve, "prepare_toy", toy)
    monkeypatch.setattr(pb, "ensure_pretrained_conformer",
                        lambda path, steps: built.append((path, steps)) or path)
    assert _resolve([]).conformer_weights is None  # the default run: BAO's passes are off
    assert _resolve(["--make_transcam_pass", "True"]).conformer_weights is None
    assert built == []
    args = _resolve(["--train_transcam_pass", "True"])
    assert args.conformer_weights == str(resolve.TOY_CONFORMER)
    assert resolve.TOY_CONFORMER.name == "conformer_s_synthetic.pth"
    assert built == [(resolve.TOY_CONFORMER, pb.CONFORMER_STEPS)]
    assert _resolve(["--train_transcam_pass", "True", "--conformer_weights",
                     "none"]).conformer_weights == "none"
    assert _resolve(["--voc12_root", str(fake_voc), "--train_transcam_pass",
                     "True"]).conformer_weights is None
    assert len(built) == 1


def test_a_toy_conformer_cache_without_its_summary_is_noted(tmp_path, monkeypatch):
    """The report notes a synthetic cache with no pretraining record, the Conformer's as the
    ResNet's; a cache with its sidecar, or another file, gives no note."""
    import argparse

    from step.driver import resolve
    from step.driver.workspace import given_by_hand
    cache = tmp_path / "conformer_s_synthetic.pth"
    cache.write_bytes(b"weights")
    monkeypatch.setattr(resolve, "TOY_CONFORMER", cache)
    args = argparse.Namespace(backbone_weights=None, conformer_weights=str(cache))
    assert given_by_hand(run_sample.PIPELINE, args, []) == [
        f"{cache} (the synthetic backbone's cache) has no record of how it was pretrained: "
        f"used as given"]
    cache.with_suffix(".json").write_text("{}")
    assert given_by_hand(run_sample.PIPELINE, args, []) == []
    other = tmp_path / "mine.pth"
    other.write_bytes(b"weights")
    assert given_by_hand(run_sample.PIPELINE, argparse.Namespace(
        backbone_weights=None, conformer_weights=str(other)), []) == []
