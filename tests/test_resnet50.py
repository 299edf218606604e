import pytest
import torch

from net.resnet50 import ResNet50, load_backbone_weights
from net.resnet50_cam import Net


def torchvision_resnet50_keys() -> set[str]:
    """torchvision's resnet50 state_dict keys, written out from its published layout."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{k}" for k in bn}
    for layer, blocks in zip(range(1, 5), (3, 4, 6, 3)):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            for i in (1, 2, 3):
                keys |= {f"{p}.conv{i}.weight"} | {f"{p}.bn{i}.{k}" for k in bn}
            if b == 0:
                keys |= {f"{p}.downsample.0.weight"} | {f"{p}.downsample.1.{k}" for k in bn}
    return keys


def test_state_dict_keys_match_torchvision():
    model = ResNet50(num_classes=1000)
    assert set(model.state_dict()) == torchvision_resnet50_keys()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["layer4.0.downsample.0.weight"] == (2048, 1024, 1, 1)
    assert shapes["layer2.0.conv2.weight"] == (128, 128, 3, 3)
    assert shapes["fc.weight"] == (1000, 2048)


@pytest.mark.parametrize("h,w", [(512, 512), (375, 500), (33, 47)])
def test_output_stride_16_no_dilation(h, w):
    model = ResNet50().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    assert out.shape == (1, 2048, -(-h // 16), -(-w // 16))
    assert model.layer4[0].conv2.stride == (1, 1) and model.layer4[0].conv2.dilation == (1, 1)


def test_fixed_batchnorm_ignores_batch_statistics():
    model = ResNet50().train()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model(x)[:1]
        b = model(x[:1])
    torch.testing.assert_close(a, b)
    assert torch.equal(model.bn1.running_mean, torch.zeros(64))


def test_load_weights_round_trip(tmp_path):
    src = ResNet50(num_classes=1000)
    torch.nn.init.normal_(src.layer3[2].conv1.weight)
    path = tmp_path / "r50.pth"
    torch.save(src.state_dict(), path)
    dst = ResNet50()
    load_backbone_weights(dst, path)
    assert torch.equal(dst.layer3[2].conv1.weight, src.layer3[2].conv1.weight)


def test_missing_weights_file_names_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="--backbone_weights"):
        load_backbone_weights(ResNet50(), tmp_path / "nope.pth")


def test_wrong_weights_file_names_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "head.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="missing keys.*unexpected keys.*head.weight"):
        load_backbone_weights(ResNet50(), path)


def test_cam_net_reference_layout_and_shapes():
    net = Net(n_classes=20)
    keys = set(net.state_dict())
    # the reference registers the backbone both as `resnet50` and as `stage1..4` views
    assert {"resnet50.conv1.weight", "stage1.0.weight", "stage1.4.0.conv1.weight",
            "stage2.0.0.conv1.weight", "stage4.0.2.bn3.running_var", "classifier.weight"} <= keys
    assert net.classifier.bias is None and tuple(net.classifier.weight.shape) == (20, 2048, 1, 1)
    x = torch.randn(2, 3, 96, 80)
    assert net(x).shape == (2, 20)
    cam = net.cam(x)
    assert cam.shape == (2, 20, 6, 5) and cam.min() >= 0


@pytest.mark.parametrize("frozen", [0, 2])
def test_cam_net_frozen_stages_get_no_gradient(frozen):
    """--cam_frozen_stages: the reference's 2 leaves layer1 and layer2 fixed; 0 trains them;
    conv1 and bn1 are fixed either way."""
    torch.manual_seed(0)
    net = Net(3)
    net.freeze_stages(frozen)
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    has_grad = lambda p: p.grad is not None and bool(p.grad.abs().sum() > 0)
    assert has_grad(net.resnet50.layer3[0].conv1.weight)
    assert has_grad(net.resnet50.layer1[0].conv1.weight) == (frozen == 0)
    assert has_grad(net.resnet50.layer2[0].conv1.weight) == (frozen == 0)
    assert net.resnet50.conv1.weight.grad is None
    trainable = {id(p) for p in net.param_groups()[0]}
    assert (id(net.resnet50.layer1[0].conv1.weight) in trainable) == (frozen == 0)
