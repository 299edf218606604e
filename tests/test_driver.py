"""run_sample.py's flag resolution: profiles, pass selection, whole-chain resume."""
import run_sample


def _resolve(argv):
    return run_sample.resolve(run_sample.build_parser().parse_args(argv))


def test_no_pass_flag_runs_everything_and_resumes_training(fake_voc, tmp_path):
    weights = tmp_path / "cam.pth"
    args = _resolve(["--voc12_root", str(fake_voc), "--cam_weights_name", str(weights)])
    assert all(getattr(args, f"{name}_pass") for name in run_sample.STEPS)
    assert not run_sample.already_trained(args, "train_cam")
    weights.write_bytes(b"x")
    assert run_sample.already_trained(args, "train_cam")
    assert not run_sample.already_trained(args, "make_cam")  # inference steps skip per image


def test_explicit_pass_or_overwrite_always_retrains(fake_voc, tmp_path):
    weights = tmp_path / "cam.pth"
    weights.write_bytes(b"x")
    base = ["--voc12_root", str(fake_voc), "--cam_weights_name", str(weights)]
    args = _resolve(base + ["--train_cam_pass", "True"])
    assert args.train_cam_pass and not args.make_cam_pass
    assert not run_sample.already_trained(args, "train_cam")
    assert not run_sample.already_trained(_resolve(base + ["--overwrite", "True"]), "train_cam")


def test_voc_profile_keeps_reference_defaults(fake_voc):
    args = _resolve(["--voc12_root", str(fake_voc)])
    assert (args.cam_crop_size, args.cam_batch_size, args.cam_learning_rate) == (512, 16, 0.1)
    assert args.poly_momentum is None  # the reference quirk (momentum = weight decay)
    assert (args.exp_times, args.beta, args.sem_seg_bg_thres) == (8, 10.0, 0.25)
    assert (args.cam_conf_fg_thres, args.amn_conf_fg_thres) == (0.30, 0.45)
    args = _resolve(["--voc12_root", str(fake_voc), "--conf_fg_thres", "0.4"])
    assert args.cam_conf_fg_thres == args.amn_conf_fg_thres == 0.4
