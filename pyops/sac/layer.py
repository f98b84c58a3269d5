"""The switchable atrous convolution layer :class:`SAConv2d` (mmcv's parameter names and
checkpoint rules)."""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

from pyops import _backend, _checks, _scripting
from pyops import reference as _ref
from pyops._budget import budget
from pyops.reference.sac import AWS_EPS, aws_variance
from pyops.sac.conv import _check_algorithm, _check_geometry, sac_conv2d
from pyops.sac.deform import deform_conv2d


class SAConv2d(nn.Conv2d):
    """Switchable atrous convolution (DetectoRS), a drop-in for mmcv's ``SAConv2d`` (``SAC``).

    Parameters and buffers carry mmcv's names (``weight``, ``bias``, ``weight_gamma``,
    ``weight_beta``, ``weight_diff``, ``switch.*``, ``pre_context.*``, ``post_context.*``), so an
    mmcv / mmdetection / DetectoRS state_dict loads unchanged. Initialisation: the switch is
    weight 0, bias 1 (so ``S == 1``), ``weight_diff`` is 0 and both context convs are 0: the layer
    then equals a plain convolution with weight ``weight``.

    Checkpoint loading follows AWS: a state_dict without ``weight_gamma``/``weight_beta`` (a plain
    ``nn.Conv2d`` one) sets ``beta = mean_o(W)`` and ``gamma = sqrt(var_o(W) + 1e-5)`` so the
    standardised weight equals ``W`` exactly; the switch, ``weight_diff`` and the contexts are
    then reset to their initial values (if the checkpoint lacks them) and not reported missing,
    so the loaded layer equals that convolution.

    The bias is added once, after the blend (the original DetectoRS code adds it in both branches,
    which is the same; mmcv on torch >= 1.8 drops it, which differs only for a non-zero bias).
    Fan-in 1 (``in_channels / groups * kh * kw == 1``): the variance of a single weight is taken
    as 0 (mmcv's unbiased variance is NaN there), so the standardised weight is 0 and
    ``AWS(W) = weight_beta``, in every backend and in :mod:`pyops.reference`.
    ``use_deform=True`` (what every released DetectoRS model uses) is mmcv's deformable variant:
    ``offset_s`` / ``offset_l`` (3x3 convolutions to 18 channels, padding 1, the layer's stride,
    zero-initialised) predict the offsets of each branch from the switch's 5x5 average, and each
    branch is a :func:`pyops.deform_conv2d` (one offset group; the large one with 3x padding and
    dilation and ``AWS(W) + weight_diff``); it needs a 3x3 kernel. The bias is added once after
    the blend there too (mmcv's deformable path drops it; DetectoRS backbones use bias=False).
    TorchScript supports only ``use_deform=False``.
    ``backend`` picks the backend of every call (``None``: by device, see :mod:`pyops._backend`)
    and ``algorithm`` the forward algorithm (``None``: :func:`default_algorithm`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, use_deform: bool = False, *, backend: str | None = None,
                 algorithm: str | None = None):
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            _checks.integer("SAConv2d", name, value, min=0)
        groups = _checks.integer("SAConv2d", "groups", groups, min=1)
        use_deform = _checks.boolean("SAConv2d", "use_deform", use_deform)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"pyops.SAConv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        _check_geometry(in_channels, self.weight.shape, self.stride, self.padding, self.dilation, groups,
                        "pyops.SAConv2d")
        if use_deform and (self.kernel_size != (3, 3) or in_channels == 0):
            raise ValueError(f"pyops.SAConv2d: use_deform=True needs a 3x3 kernel and in_channels >= 1 (mmcv's offset "
                             f"convolutions predict 18 = 2 * 3 * 3 offsets), got kernel_size {self.kernel_size} and "
                             f"in_channels {in_channels}")
        _backend._validate(backend)
        _check_algorithm(algorithm, "pyops.SAConv2d")
        self.backend = backend
        self.algorithm = algorithm
        self.use_deform = use_deform
        self.register_buffer("weight_gamma", torch.ones(out_channels, 1, 1, 1))
        self.register_buffer("weight_beta", torch.zeros(out_channels, 1, 1, 1))
        self.switch = nn.Conv2d(in_channels, 1, kernel_size=1, stride=stride, bias=True)
        self.weight_diff = nn.Parameter(torch.empty_like(self.weight))
        self.pre_context = nn.Conv2d(in_channels, in_channels, kernel_size=1, bias=True)
        self.post_context = nn.Conv2d(out_channels, out_channels, kernel_size=1, bias=True)
        if use_deform:
            self.offset_s = nn.Conv2d(in_channels, 18, kernel_size=3, padding=1, stride=stride, bias=True)
            self.offset_l = nn.Conv2d(in_channels, 18, kernel_size=3, padding=1, stride=stride, bias=True)
        self.init_sac()
        self.register_load_state_dict_post_hook(_post_load_hook)

    @torch.no_grad()
    def init_sac(self) -> None:
        """Reset the switch (S == 1), weight_diff, both contexts and the offset convolutions (0) to
        their initial values."""
        self.switch.weight.zero_()
        self.switch.bias.fill_(1.0)
        self.weight_diff.zero_()
        for conv in (self.pre_context, self.post_context) + self._offset_convs():
            conv.weight.zero_()
            conv.bias.zero_()

    def _offset_convs(self) -> tuple:
        return (self.offset_s, self.offset_l) if self.use_deform else ()

    @budget(forward=1, backward=1, note="use_deform=False; the deformable layer is a composition of ~20 ops "
                                        "around two deform_conv2d calls")
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles only this branch (see pyops._scripting)
            if self.use_deform:
                raise RuntimeError("pyops.SAConv2d: TorchScript does not support use_deform=True; run it eagerly "
                                   "or with torch.compile")
            return _scripting.sac_conv2d(
                x, self.weight, self.weight_gamma, self.weight_beta, self.weight_diff, self.switch.weight,
                self.switch.bias, self.pre_context.weight, self.pre_context.bias, self.post_context.weight,
                self.post_context.bias, self.bias, [self.stride[0], self.stride[1]],
                [self.padding[0], self.padding[1]], [self.dilation[0], self.dilation[1]], self.groups, self.backend, self.algorithm)
        return self._eager_forward(x)

    @torch.jit.unused
    def _eager_forward(self, x: torch.Tensor) -> torch.Tensor:
        _checks.tensor("SAConv2d", "x", x, dims=None, dtypes=None)
        params = [
            self.weight, self.weight_gamma, self.weight_beta, self.weight_diff,
            self.switch.weight, self.switch.bias, self.pre_context.weight, self.pre_context.bias,
            self.post_context.weight, self.post_context.bias, self.bias,
        ]
        if self.use_deform:
            params[-1:-1] = [p for conv in self._offset_convs() for p in (conv.weight, conv.bias)]
        run = self._deform_forward if self.use_deform else self._forward
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):  # run in the autocast dtype, like nn.Conv2d
            dtype = torch.get_autocast_dtype(device_type)
            x = x.to(dtype)
            params = [p.to(dtype) if p is not None else None for p in params]
            with torch.autocast(device_type, enabled=False):  # the kernels pick their own precision
                return run(x, params)
        return run(x, params)

    def _forward(self, x, params):
        return sac_conv2d(x, *params, self.stride, self.padding, self.dilation, self.groups, backend=self.backend,
                          algorithm=self.algorithm)

    def _deform_forward(self, x, params):
        """mmcv's deformable SAC: offsets from 3x3 convolutions of the switch's 5x5 average, each
        branch a :func:`pyops.deform_conv2d` (the layer's ``backend``); the rest in ATen."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or min(x.shape[2:]) < 3:
            raise ValueError(f"pyops.SAConv2d: x must be (N, {self.in_channels}, H, W) with H, W >= 3 (the switch "
                             f"reflect-pads by 2), got shape {tuple(x.shape)}")
        # the reference's composition, with pyops.deform_conv2d on the layer's backend for the branches
        name = _backend.resolve("deform_conv2d", self.backend, x.device)
        deform = None if name == "reference" else functools.partial(deform_conv2d, backend=name)
        return _ref.sac_deform_conv2d(x, *params, self.stride, self.padding, self.dilation, self.groups, deform=deform)

    # AWS checkpoint rule: gamma is set to -1 before loading; a positive mean afterwards means
    # the checkpoint carried gamma/beta. Otherwise recover them from the loaded weight.
    _SAC_KEYS = ("weight_gamma", "weight_beta", "weight_diff", "switch.weight", "switch.bias",
                 "pre_context.weight", "pre_context.bias", "post_context.weight", "post_context.bias",
                 "offset_s.weight", "offset_s.bias", "offset_l.weight", "offset_l.bias")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        self.weight_gamma.data.fill_(-1)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._recovered_prefix = None
        if self.weight_gamma.data.mean() > 0:
            return
        with torch.no_grad():
            flat = self.weight.data.flatten(1)
            self.weight_beta.data.copy_(flat.mean(dim=1).view(-1, 1, 1, 1))
            self.weight_gamma.data.copy_(torch.sqrt(aws_variance(flat) + AWS_EPS).view(-1, 1, 1, 1))
            self.init_sac()  # the child convs load after this, from the checkpoint if it has them
        self._recovered_prefix = prefix

    def _drop_recovered_keys(self, incompatible_keys) -> None:
        prefix = getattr(self, "_recovered_prefix", None)
        if prefix is None:
            return
        self._recovered_prefix = None
        for key in self._SAC_KEYS:
            while prefix + key in incompatible_keys.missing_keys:
                incompatible_keys.missing_keys.remove(prefix + key)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", use_deform={self.use_deform}"


def _post_load_hook(module, incompatible_keys):
    module._drop_recovered_keys(incompatible_keys)
