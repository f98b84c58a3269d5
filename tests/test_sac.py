"""Switchable atrous convolution: every backend against the reference, with non-initial
parameters (at initialisation the switch is 1 and the weight_diff gradient is exactly 0)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import (
    HAS_CUDA,
    assert_compile_matches_eager,
    assert_gradcheck,
    assert_matches_reference,
    assert_opcheck,
    device_backends,
    ops_for,
)

import pyops
from pyops import reference
from pyops.sac import random_parameters

DEVICE_BACKENDS = device_backends()

# (N, C, O, H, W, k, stride, dilation, groups, bias)
CONFIGS = [
    pytest.param((2, 6, 4, 9, 11, 3, 1, 1, 1, True), id="s1"),
    pytest.param((2, 6, 4, 9, 11, 3, 2, 1, 1, False), id="s2-nobias"),
    pytest.param((1, 6, 9, 7, 13, 3, 2, 1, 3, True), id="s2-groups3-odd"),
    pytest.param((2, 4, 4, 10, 8, 1, 1, 1, 2, True), id="k1-groups2"),
    pytest.param((1, 5, 3, 12, 9, 5, 1, 2, 1, True), id="k5-d2"),
    pytest.param((2, 6, 4, 13, 11, 3, 1, 1, 1, True), id="s1-13x11"),
    pytest.param((1, 4, 6, 13, 11, 3, 2, 2, 2, False), id="s2-d2-groups2-13x11"),
]
# forward algorithms of the C++/CUDA/Triton backends (pyops.sac.ALGORITHMS)
ALGORITHMS = ["composition", "igemm"]


def make_case(config, dtype, device, channels_last=False, seed=0):
    N, C, O, H, W, k, stride, dilation, groups, bias = config
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    params = random_parameters(C, O, k, groups, bias, dtype=dtype, device=device, generator=gen)
    geometry = (stride, dilation * (k - 1) // 2, dilation, groups)
    return (x, *params), geometry


def fused(backend, geometry, algorithm=None):
    return lambda *a: pyops.sac_conv2d(*a, *geometry, backend=backend, algorithm=algorithm)


def ref(geometry):
    return lambda *a: reference.sac_conv2d(*a, *geometry)


def drop_none(inputs):
    """(inputs without a None bias, a function re-inserting it) for gradcheck-style helpers."""
    if inputs[-1] is not None:
        return inputs, lambda f: f
    return inputs[:-1], lambda f: (lambda *a: f(*a, None))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_matches_reference(device, backend, config, channels_last, algorithm):
    # forward and every gradient, float32 and float64
    for dtype in (torch.float32, torch.float64):
        inputs, geometry = make_case(config, dtype, device, channels_last)
        inputs, wrap = drop_none(inputs)
        tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else None
        assert_matches_reference(wrap(fused(backend, geometry, algorithm)), wrap(ref(geometry)), inputs, tol=tol)
        out = pyops.sac_conv2d(*make_case(config, dtype, device, channels_last)[0], *geometry, backend=backend,
                               algorithm=algorithm)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        assert out.is_contiguous(memory_format=fmt)


def _forward_backward(fn, inputs, g):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], g.to(out.dtype))
    return [out, *grads]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_empty_batch_and_wide_channels(device, backend, channels_last, algorithm):
    # an empty batch; more channels than one warp / Triton channel block, 3x3 images; and several
    # channel blocks, output-channel tiles and pixel tiles of the igemm kernels (groups 2, stride 2)
    configs = [(0, 4, 4, 5, 6, 3, 1, 1, 1, True), (2, 70, 40, 3, 3, 3, 1, 1, 1, True),
               (1, 40, 36, 17, 21, 3, 2, 1, 2, True)]
    for config in configs:
        inputs, geometry = make_case(config, torch.float32, device, channels_last)
        assert_matches_reference(fused(backend, geometry, algorithm), ref(geometry), inputs,
                                 tol=dict(atol=1e-4, rtol=1e-4))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_low_precision_no_worse_than_eager(device, backend, dtype, channels_last, algorithm):
    if backend == "triton" and device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter computes bfloat16 wrongly")
    # forward and every gradient: error against a float64 reference at most about that of the
    # eager module run in the same dtype (twice it, plus one rounding of the largest value)
    config = (2, 8, 8, 10, 9, 3, 1, 1, 1, True)
    inputs64, geometry = make_case(config, torch.float64, device, channels_last)
    low = [t.to(dtype) if t is not None else None for t in inputs64]
    g = torch.randn(2, 8, 10, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)
    want = _forward_backward(ref(geometry), [t.double() for t in low], g)
    got = _forward_backward(fused(backend, geometry, algorithm), low, g)
    eager = _forward_backward(ref(geometry), low, g)
    for i, (a, b, w) in enumerate(zip(got, eager, want)):
        scale = w.abs().max().item() + 1e-3
        err, eager_err = (a.double() - w).abs().max().item(), (b.double() - w).abs().max().item()
        assert err <= 2 * eager_err + torch.finfo(dtype).eps * scale, (i, err, eager_err, scale)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[2]])
def test_gradcheck(device, backend, config, algorithm):
    if backend == "triton" and device == "cpu":
        pytest.skip("too slow in the Triton interpreter; float64 agreement is in test_matches_reference")
    N, C, O, H, W, k, stride, dilation, groups, bias = config
    small = (1, C, O, 7, 6, k, stride, dilation, groups, True)
    inputs, geometry = make_case(small, torch.float64, device)
    assert_gradcheck(fused(backend, geometry, algorithm), inputs)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_weight_diff_and_switch_gradients_are_exercised(device, backend, algorithm):
    # with non-initial parameters the gradients that vanish at init are far from zero
    inputs, geometry = make_case((2, 6, 4, 9, 11, 3, 1, 1, 1, True), torch.float32, device)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    pyops.sac_conv2d(*leaves, *geometry, backend=backend, algorithm=algorithm).square().sum().backward()
    for name, i in (("weight_diff", 4), ("switch_weight", 5), ("pre_weight", 7), ("post_weight", 9)):
        assert leaves[i].grad.abs().max() > 1e-3, name


def plain_conv(C, O, k, stride, dilation, groups, bias, seed=3):
    torch.manual_seed(seed)
    conv = nn.Conv2d(C, O, k, stride, dilation * (k - 1) // 2, dilation, groups, bias)
    with torch.no_grad():
        if bias:
            conv.bias.normal_()
    return conv


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_initialisation_is_a_plain_conv(backend, channels_last):
    torch.manual_seed(0)
    m = pyops.SAConv2d(6, 4, 3, stride=2, padding=1, groups=2, backend=backend)
    assert torch.equal(m.switch.weight, torch.zeros(1, 6, 1, 1)) and torch.equal(m.switch.bias, torch.ones(1))
    assert not m.weight_diff.any() and not m.pre_context.weight.any() and not m.post_context.bias.any()
    x = torch.randn(2, 6, 9, 8)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    # at init gamma = 1, beta = 0: the plain conv of the standardised weight
    w = reference.aws_weight(m.weight, m.weight_gamma, m.weight_beta)
    torch.testing.assert_close(m(x), F.conv2d(x, w, m.bias, 2, 1, 1, 2), atol=1e-5, rtol=1e-5)
    # and at init the weight_diff gradient is exactly zero (why other tests use random parameters)
    m(x).sum().backward()
    assert not m.weight_diff.grad.any()


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("stride,groups,bias", [(1, 1, True), (2, 2, False)])
def test_plain_conv_state_dict_loads(backend, stride, groups, bias):
    conv = plain_conv(6, 4, 3, stride, 1, groups, bias)
    m = pyops.SAConv2d(6, 4, 3, stride=stride, padding=1, groups=groups, bias=bias, backend=backend)
    with torch.no_grad():  # trained SAC parameters are replaced by the initial ones on this load
        m.switch.bias.fill_(0.3)
        m.weight_diff.normal_()
        m.post_context.weight.normal_()
    result = m.load_state_dict(conv.state_dict())  # strict: nothing missing, nothing unexpected
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 6, 11, 7)
    torch.testing.assert_close(m(x), conv(x), atol=1e-5, rtol=1e-5)
    # recovered AWS: the standardised weight is the loaded one
    torch.testing.assert_close(reference.aws_weight(m.weight, m.weight_gamma, m.weight_beta), conv.weight, atol=1e-6, rtol=1e-6)


def test_plain_conv_state_dict_loads_nested():
    net = nn.Sequential(nn.Identity(), plain_conv(4, 4, 3, 1, 1, 1, False))
    sac = nn.Sequential(nn.Identity(), pyops.SAConv2d(4, 4, 3, padding=1, bias=False))
    sac.load_state_dict(net.state_dict())
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(sac(x), net(x), atol=1e-5, rtol=1e-5)


MMCV_KEYS = {
    "weight", "bias", "weight_gamma", "weight_beta", "weight_diff", "switch.weight", "switch.bias",
    "pre_context.weight", "pre_context.bias", "post_context.weight", "post_context.bias",
}


def mmcv_state_dict(C, O, k, groups, seed=5):
    """A state_dict with mmcv SAConv2d's keys and shapes and trained-looking values."""
    weight, gamma, beta, diff, sw, sb, pw, pb, qw, qb, bias = random_parameters(
        C, O, k, groups, True, generator=torch.Generator().manual_seed(seed)
    )
    return {
        "weight": weight, "bias": bias, "weight_gamma": gamma, "weight_beta": beta, "weight_diff": diff,
        "switch.weight": sw, "switch.bias": sb, "pre_context.weight": pw, "pre_context.bias": pb,
        "post_context.weight": qw, "post_context.bias": qb,
    }


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_mmcv_state_dict_loads_unchanged(backend):
    sd = mmcv_state_dict(6, 6, 3, 3)
    m = pyops.SAConv2d(6, 6, 3, stride=2, padding=1, groups=3, backend=backend)
    assert set(m.state_dict()) == MMCV_KEYS
    result = m.load_state_dict(sd)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in sd.items():  # gamma/beta kept, not recovered
        assert torch.equal(m.state_dict()[key], value), key
    x = torch.randn(2, 6, 9, 10)
    args = [sd[k] for k in ("weight", "weight_gamma", "weight_beta", "weight_diff", "switch.weight", "switch.bias",
                            "pre_context.weight", "pre_context.bias", "post_context.weight", "post_context.bias", "bias")]
    torch.testing.assert_close(m(x), reference.sac_conv2d(x, *args, 2, 1, 1, 3), atol=1e-5, rtol=1e-5)
    # round trip
    m2 = pyops.SAConv2d(6, 6, 3, stride=2, padding=1, groups=3, backend=backend)
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2(x), m(x), atol=0, rtol=0)


def test_module_dtypes_and_layouts():
    m = pyops.SAConv2d(4, 6, 3, padding=1)
    m.load_state_dict(mmcv_state_dict(4, 6, 3, 1))
    x = torch.randn(2, 4, 7, 9)
    want = pyops.SAConv2d(4, 6, 3, padding=1, backend="reference")
    want.load_state_dict(m.state_dict())
    for dtype in (torch.float32, torch.bfloat16):
        for fmt in (torch.contiguous_format, torch.channels_last):
            mm = m.to(dtype=dtype, memory_format=fmt)
            out = mm(x.to(dtype=dtype, memory_format=fmt))
            assert out.dtype == dtype and out.is_contiguous(memory_format=fmt)
            tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.1, rtol=0.05)
            torch.testing.assert_close(out.float(), want(x), **tol)
            m = m.float()


def test_module_under_autocast():
    m = pyops.SAConv2d(4, 4, 3, padding=1)
    m.load_state_dict(mmcv_state_dict(4, 4, 3, 1))
    x = torch.randn(2, 4, 6, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert m.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    torch.testing.assert_close(out.float(), m(x), atol=0.1, rtol=0.05)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_opcheck(device, backend, channels_last, algorithm):
    inputs, (stride, padding, dilation, groups) = make_case((2, 4, 4, 7, 6, 3, 2, 1, 2, True), torch.float32, device, channels_last)
    inputs = [t.requires_grad_() for t in inputs]
    geometry = ([stride] * 2, [padding] * 2, [dilation] * 2, groups)
    suffix = "_igemm" if algorithm == "igemm" else ""
    forward_op = getattr(ops_for(backend), "sac_conv2d" + suffix)
    backward_op = getattr(ops_for(backend), "sac_conv2d_backward" + suffix)
    assert_opcheck(forward_op, (*inputs, *geometry))
    out, switch, diff, xp, x_mean, y_mean = forward_op(*[t.detach() for t in inputs], *geometry)
    x, w, gamma, beta, wd, sw, sb, pw, pb, qw, qb, b = [t.detach() for t in inputs]
    saved = (switch, diff, x_mean, y_mean)
    assert_opcheck(backward_op, (torch.randn_like(out), xp, w, gamma, beta, wd, sw, pw, qw, *saved, *geometry))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_compile_fullgraph(device, backend, algorithm):
    inputs, geometry = make_case((1, 4, 4, 7, 6, 3, 2, 1, 1, True), torch.float32, device)
    assert_compile_matches_eager(
        lambda *a: pyops.sac_conv2d(*a, *geometry, backend=backend, algorithm=algorithm).sin(), inputs)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_igemm_saves_what_the_composition_saves(device, backend, channels_last):
    # both forwards feed the same backward: switch, branch difference and means must agree
    inputs, (stride, padding, dilation, groups) = make_case((2, 6, 4, 13, 11, 3, 2, 1, 2, True), torch.float64,
                                                            device, channels_last)
    geometry = ([stride] * 2, [padding] * 2, [dilation] * 2, groups)
    want = ops_for(backend).sac_conv2d(*inputs, *geometry)
    got = ops_for(backend).sac_conv2d_igemm(*inputs, *geometry)
    for name, a, b in zip(("out", "switch", "branch_diff", "xp", "x_mean", "y_mean"), got, want):
        assert a.shape == b.shape and a.dtype == b.dtype and a.stride() == b.stride(), name
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7, msg=name)


def test_default_algorithm_table():
    # one table picks the forward algorithm; every backend keeps the composition until measured
    assert pyops.sac.ALGORITHMS == ("composition", "igemm")
    for backend in ("cpu", "cuda", "triton"):
        assert pyops.sac.default_algorithm(backend, (8, 256, 64, 64), (256, 256, 3, 3), (1, 1), (1, 1), 1) == "composition"


def test_compile_module_inductor_cpu():
    m = pyops.SAConv2d(4, 4, 3, padding=1)
    m.load_state_dict(mmcv_state_dict(4, 4, 3, 1))
    x = torch.randn(1, 4, 6, 7)
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend="inductor")
    torch.testing.assert_close(compiled(x), m(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_bad_inputs(backend):
    inputs, geometry = make_case((1, 4, 4, 7, 6, 3, 1, 1, 1, True), torch.float32, "cpu")
    x, *params = inputs

    def call(*a, geometry=geometry):
        return pyops.sac_conv2d(*a, *geometry, backend=backend)

    with pytest.raises(ValueError, match=r"weight has shape \(4, 4, 3, 3\).*x has 5 channels"):
        call(torch.randn(1, 5, 7, 6), *params)
    with pytest.raises(ValueError, match="odd kernel sizes and padding = dilation"):
        call(x, torch.randn(4, 4, 2, 2), *params[1:3], torch.randn(4, 4, 2, 2), *params[4:])
    with pytest.raises(ValueError, match="odd kernel sizes and padding = dilation"):
        call(x, *params, geometry=(1, 0, 1, 1))
    with pytest.raises(ValueError, match=r"switch_weight must have shape \(1, 4, 1, 1\), got \(1, 3, 1, 1\)"):
        call(x, *params[:4], torch.randn(1, 3, 1, 1), *params[5:])
    with pytest.raises(ValueError, match=r"post_weight must have shape \(4, 4, 1, 1\)"):
        call(x, *params[:8], torch.randn(3, 3, 1, 1), *params[9:])
    with pytest.raises(ValueError, match="weight_diff is torch.float64 on cpu but x is torch.float32"):
        call(x, *params[:3], params[3].double(), *params[4:])
    with pytest.raises(ValueError, match="x must be a 4-D"):
        call(x[0], *params)
    with pytest.raises(ValueError, match="at least 3x3"):
        call(x[:, :, :2], *params)
    with pytest.raises(ValueError, match="backend 'cuda' needs CUDA tensors"):
        pyops.sac_conv2d(x, *params, *geometry, backend="cuda")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        pyops.sac_conv2d(x, *params, *geometry, backend=backend, algorithm="winograd")


def test_bad_module_arguments():
    with pytest.raises(ValueError, match=r"padding = dilation \* \(kernel_size - 1\) / 2"):
        pyops.SAConv2d(4, 4, 3, padding=0)
    with pytest.raises(ValueError, match="odd kernel sizes"):
        pyops.SAConv2d(4, 4, 2, padding=1)
    with pytest.raises(ValueError, match="divisible by groups"):
        pyops.SAConv2d(4, 6, 3, padding=1, groups=4)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        pyops.SAConv2d(4, 4, 3, padding=1, algorithm="fft")
    m = pyops.SAConv2d(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match="x has 3 channels"):
        m(torch.randn(1, 3, 5, 5))


def test_cpp_op_checks_its_arguments():
    # callers of torch.ops.pyops (C++, other frameworks) get errors too, not crashes
    inputs, _ = make_case((1, 4, 4, 7, 6, 3, 1, 1, 1, True), torch.float32, "cpu")
    x, *params = inputs
    with pytest.raises(RuntimeError, match="weight has shape"):
        torch.ops.pyops.sac_conv2d(torch.randn(1, 5, 7, 6), *params, [1, 1], [1, 1], [1, 1], 1)
    with pytest.raises(RuntimeError, match="padding = dilation"):
        torch.ops.pyops.sac_conv2d(x, *params, [1, 1], [2, 2], [1, 1], 1)
    with pytest.raises(RuntimeError, match="pre_bias must have shape"):
        torch.ops.pyops.sac_conv2d(x, *params[:7], torch.randn(3), *params[8:], [1, 1], [1, 1], [1, 1], 1)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.gpu
def test_cuda_matches_cpu_kernel():
    inputs, geometry = make_case((2, 16, 8, 13, 11, 3, 2, 1, 2, True), torch.float32, "cpu", True)
    cpu = pyops.sac_conv2d(*inputs, *geometry, backend="cpu")
    cuda = pyops.sac_conv2d(*[t.cuda() for t in inputs], *geometry, backend="cuda")
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(
    "config",
    [
        pytest.param((2, 48, 80, 37, 29, 3, 1, 1, 1, True), id="s1-37x29"),
        pytest.param((2, 40, 72, 23, 45, 3, 2, 2, 2, True), id="s2-d2-groups2"),
        pytest.param((1, 24, 16, 19, 17, 5, 1, 1, 1, False), id="k5"),
    ],
)
def test_cuda_igemm_tiles(backend, dtype, channels_last, config):
    # several pixel, channel and output-channel tiles of the GPU igemm kernels (tensor cores for
    # 16-bit types), forward and every gradient, against the float64 reference
    inputs64, geometry = make_case(config, torch.float64, "cuda", channels_last)
    inputs = [t.to(dtype) if t is not None else None for t in inputs64]
    N, C, O, H, W, k, stride = config[:7]
    g = torch.randn(N, O, (H - 1) // stride + 1, (W - 1) // stride + 1, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2)).to("cuda")
    got = _forward_backward(fused(backend, geometry, "igemm"), inputs, g)
    eager = _forward_backward(ref(geometry), inputs, g)
    want = _forward_backward(ref(geometry), [t.double() if t is not None else None for t in inputs], g)
    for i, (a, b, w) in enumerate(zip(got, eager, want)):
        scale = w.abs().max().item() + 1e-3
        err, eager_err = (a.double() - w).abs().max().item(), (b.double() - w).abs().max().item()
        assert err <= 2 * eager_err + 8 * torch.finfo(dtype).eps * scale, (i, err, eager_err, scale)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_torchscript_module_keeps_algorithm(algorithm):
    # the scripted forward (pyops._scripting) runs the chosen algorithm: equal to eager bit for bit
    import warnings

    conv = pyops.SAConv2d(4, 6, 3, padding=2, dilation=2, stride=2, algorithm=algorithm)
    conv.load_state_dict(mmcv_state_dict(4, 6, 3, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch 2.x
        scripted = torch.jit.script(conv)
    x = torch.randn(2, 4, 13, 11)
    torch.testing.assert_close(scripted(x), conv(x), rtol=0, atol=0)
    if algorithm == "igemm":  # and agrees with the composition within float32 rounding
        other = pyops.SAConv2d(4, 6, 3, padding=2, dilation=2, stride=2)
        other.load_state_dict(conv.state_dict())
        torch.testing.assert_close(scripted(x), other(x), rtol=1e-4, atol=1e-4)
