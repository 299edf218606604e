"""--amp / --channels_last: float32 outputs, close to the float32 path; the layout alone changes
nothing beyond rounding."""
import torch

from misc.engine.precision import as_float32, grad_scaler, low_precision, prepare_model


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 4, 3, padding=1))

    def forward(self, x, scale: float = 1.0):
        y = self.conv(x) * scale
        return y, {"mean": y.mean()}


def test_as_float32_casts_nested_floating_tensors_only():
    out = as_float32((torch.ones(2, dtype=torch.bfloat16), [torch.arange(3)],
                      {"a": torch.zeros(1, dtype=torch.float16)}))
    assert out[0].dtype == torch.float32 and out[1][0].dtype == torch.int64
    assert out[2]["a"].dtype == torch.float32 and isinstance(out[1], list)


def test_low_precision_forward_is_float32_and_close():
    torch.manual_seed(0)
    net, x = _Net().eval(), torch.randn(2, 3, 17, 23)
    cpu = torch.device("cpu")
    want = net(x, 2.0)[0]
    amp = low_precision(net, cpu, amp=True)(x, 2.0)
    assert amp[0].dtype == torch.float32 and amp[1]["mean"].dtype == torch.float32
    assert not torch.equal(amp[0], want)  # it did run in bf16
    torch.testing.assert_close(amp[0], want, rtol=0.05, atol=0.05)
    layout = low_precision(prepare_model(net, True), cpu, amp=False, channels_last=True)(x, 2.0)
    torch.testing.assert_close(layout[0], want, rtol=1e-5, atol=1e-5)
    assert low_precision(net, cpu, amp=False) is net  # the float32 path is untouched


def test_loss_scaler_only_for_float16():
    assert not grad_scaler(torch.device("cpu"), True).is_enabled()


def test_training_with_amp_follows_the_float32_curve(tmp_path):
    from misc.engine.train import train
    from tests.ddp_tiny_train import Points, network

    def mse(model, batch):
        out = model(batch["x"])
        assert out.dtype == torch.float32  # the loss sees float32
        return ((out[:, 0] - batch["y"]) ** 2).mean()

    curves = {}
    for amp in (False, True):
        model = network()
        result = train(model, mse, Points(), 4, 3, lambda _n: torch.optim.Adam(model.parameters(), 0.01),
                       torch.device("cpu"), tmp_path / f"amp{amp}.pth", amp=amp, channels_last=amp)
        curves[amp] = torch.tensor(result.losses)
    assert not torch.equal(curves[True], curves[False])
    torch.testing.assert_close(curves[True], curves[False], rtol=0.1, atol=0.02)
