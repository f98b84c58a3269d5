"""SAConv2d(use_deform=True), mmcv's deformable SAC: every backend against the reference module,
with non-initial parameters (offsets of a few pixels, a switch around 0.5, non-zero weight_diff
and contexts), forward and every gradient; checkpoints and errors."""

import pytest
import torch
import torch.nn as nn
from helpers import assert_gradcheck, device_backends

import pyops
from pyops import reference
from pyops.sac import random_parameters

DEVICE_BACKENDS = device_backends()

# (N, C, O, H, W, stride, padding/dilation, groups, bias)
CONFIGS = [
    pytest.param((2, 6, 4, 9, 11, 1, 1, 1, True), id="s1"),
    pytest.param((2, 6, 8, 10, 9, 2, 1, 2, False), id="s2-groups2-nobias"),
    pytest.param((1, 4, 4, 12, 13, 1, 2, 1, False), id="d2"),
]


def deform_layer(config, dtype=torch.float32, device="cpu", backend=None, seed=0):
    N, C, O, H, W, stride, d, groups, bias = config
    m = pyops.SAConv2d(C, O, 3, stride=stride, padding=d, dilation=d, groups=groups, bias=bias, use_deform=True,
                       backend=backend)
    gen = torch.Generator().manual_seed(seed)
    params = random_parameters(C, O, 3, groups, bias, dtype=torch.float64, generator=gen)
    names = ["weight", "weight_gamma", "weight_beta", "weight_diff", "switch.weight", "switch.bias",
             "pre_context.weight", "pre_context.bias", "post_context.weight", "post_context.bias", "bias"]
    state = {n: p for n, p in zip(names, params) if p is not None}
    for branch in ("offset_s", "offset_l"):  # offsets of about 1-2 pixels, varying over the image
        state[f"{branch}.weight"] = torch.randn(18, C, 3, 3, generator=gen, dtype=torch.float64) * (2.0 / (3 * C ** 0.5))
        state[f"{branch}.bias"] = torch.randn(18, generator=gen, dtype=torch.float64)
    m.load_state_dict(state, strict=True)
    x = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64)
    return m.to(device=device, dtype=dtype), x.to(device=device, dtype=dtype)


def reference_twin(m):
    twin = pyops.SAConv2d(m.in_channels, m.out_channels, 3, stride=m.stride, padding=m.padding,
                          dilation=m.dilation, groups=m.groups, bias=m.bias is not None, use_deform=True,
                          backend="reference")
    twin.load_state_dict(m.state_dict(), strict=True)
    return twin.to(device=m.weight.device, dtype=m.weight.dtype)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_matches_reference(device, backend, config, channels_last):
    m, x = deform_layer(config, torch.float32, device, backend)
    twin = reference_twin(m)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, want = m(xa), twin(xb)
    torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
    g = torch.randn_like(want)
    got_grads = torch.autograd.grad(out, [xa, *m.parameters()], g)
    want_grads = torch.autograd.grad(want, [xb, *twin.parameters()], g)
    names = ["x"] + [n for n, _ in m.named_parameters()]
    for name, a, b in zip(names, got_grads, want_grads):
        scale = b.abs().max().clamp(min=1)
        torch.testing.assert_close(a / scale, b / scale, atol=2e-4, rtol=2e-4, msg=lambda msg, n=name: f"{n}: {msg}")
    # the deformable path is exercised: offsets, weight_diff and switch all get gradients
    grads = dict(zip(names, got_grads))
    for name in ("offset_s.weight", "offset_l.weight", "weight_diff", "switch.weight"):
        assert grads[name].abs().sum() > 0, name


def test_reference_is_the_functional_reference():
    m, x = deform_layer(CONFIGS[0].values[0], torch.float64, backend="reference")
    s = m.state_dict()
    want = reference.sac_deform_conv2d(
        x, s["weight"], s["weight_gamma"], s["weight_beta"], s["weight_diff"], s["switch.weight"], s["switch.bias"],
        s["pre_context.weight"], s["pre_context.bias"], s["post_context.weight"], s["post_context.bias"],
        s["offset_s.weight"], s["offset_s.bias"], s["offset_l.weight"], s["offset_l.bias"], s["bias"],
        m.stride, m.padding, m.dilation, m.groups)
    torch.testing.assert_close(m(x), want, atol=0, rtol=0)


def test_gradcheck_cpu():
    m, x = deform_layer((1, 3, 2, 6, 5, 1, 1, 1, True), torch.float64, backend="cpu")
    params = list(m.parameters())

    def fn(x, *ps):
        return torch.func.functional_call(m, dict(zip([n for n, _ in m.named_parameters()], ps)), (x,))

    assert_gradcheck(fn, [x, *[p.detach() for p in params]])


def test_initial_layer_is_the_plain_sac_layer():
    # zero offsets: the deformable layer equals the plain one with the same parameters
    torch.manual_seed(0)
    deform = pyops.SAConv2d(6, 4, 3, padding=1, use_deform=True)
    plain = pyops.SAConv2d(6, 4, 3, padding=1)
    state = {k: v for k, v in deform.state_dict().items() if not k.startswith("offset_")}
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 6, 8, 9)
    torch.testing.assert_close(deform(x), plain(x), atol=1e-5, rtol=1e-5)
    for branch in (deform.offset_s, deform.offset_l):
        assert branch.weight.abs().sum() == 0 and branch.bias.abs().sum() == 0
        assert branch.weight.shape == (18, 6, 3, 3) and branch.stride == (1, 1) and branch.padding == (1, 1)


def test_plain_conv_state_dict_loads_into_deform_layer():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    m = pyops.SAConv2d(4, 6, 3, padding=1, bias=False, use_deform=True)
    with torch.no_grad():
        m.offset_s.weight.normal_()  # reset by the load
    result = m.load_state_dict(conv.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 4, 7, 8)
    torch.testing.assert_close(m(x), conv(x), atol=1e-5, rtol=1e-5)


def test_state_dict_round_trip():
    m, x = deform_layer(CONFIGS[1].values[0])
    twin = pyops.SAConv2d(6, 8, 3, stride=2, padding=1, groups=2, bias=False, use_deform=True)
    twin.load_state_dict(m.state_dict(), strict=True)
    torch.testing.assert_close(twin(x), m(x), atol=0, rtol=0)
    assert {"offset_s.weight", "offset_s.bias", "offset_l.weight", "offset_l.bias"} <= set(m.state_dict())


def test_bad_arguments():
    with pytest.raises(ValueError, match="pyops.SAConv2d: use_deform=True needs a 3x3 kernel"):
        pyops.SAConv2d(4, 4, 5, padding=2, use_deform=True)
    with pytest.raises(TypeError, match="pyops.SAConv2d: use_deform must be a bool"):
        pyops.SAConv2d(4, 4, 3, padding=1, use_deform="yes")
    m = pyops.SAConv2d(4, 4, 3, padding=1, use_deform=True)
    with pytest.raises(ValueError, match=r"pyops.SAConv2d: x must be \(N, 4, H, W\)"):
        m(torch.randn(1, 3, 8, 8))
    with pytest.raises(torch.jit.Error, match="TorchScript does not support use_deform=True"):
        torch.jit.script(m)(torch.randn(1, 4, 8, 8))
