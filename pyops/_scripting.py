"""TorchScript paths of pyops' nn.Modules.

``torch.jit.script(module)`` compiles only the branch of ``forward`` under
``torch.jit.is_scripting()``, which calls the functions below: they call the registered
``torch.ops.pyops.*`` operators directly (the same C++ / CUDA kernels eager mode uses), without
the Python-only argument handling of the functional API. Differences from eager mode:

* the backend is the module's ``backend`` when it is ``"triton"``, else the compiled kernel of the
  input's device (``"cpu"`` / ``"cuda"``); ``"reference"`` and the global :func:`pyops.set_backend`
  setting are not seen by TorchScript;
* argument checks are those of the C++ operators (still clear errors, less detailed);
* autocast is not applied (run the scripted module in the dtype you want).

Loading a saved scripted module needs ``import pyops`` first (it registers the operators).
"""

from __future__ import annotations

import math

import torch


def linformer_project(x: torch.Tensor, E: torch.Tensor, mask: torch.Tensor | None, triton: bool) -> torch.Tensor:
    """Keys or values x (B, Hkv, n, d) projected by the first n rows of E ((n_max, k) or
    (H, n_max, k)); a single key/value head is expanded to E's heads."""
    n = x.shape[2]
    E = E[..., :n, :].to(x.dtype)
    if E.dim() == 3 and x.shape[1] != E.shape[0]:
        x = x.expand(x.shape[0], E.shape[0], x.shape[2], x.shape[3])
    if triton:
        return torch.ops.pyops_triton.linformer_project(x, E, mask)
    return torch.ops.pyops.linformer_project(x, E, mask)


def linformer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    E: torch.Tensor,
    F: torch.Tensor | None,
    mask: torch.Tensor | None,
    dropout_p: float,
    backend: str | None,
) -> torch.Tensor:
    """:func:`pyops.linformer_attention` with the default scale, for 4-D q, k, v."""
    triton = backend is not None and backend == "triton"
    B, H, d = q.shape[0], q.shape[1], q.shape[3]
    kp = linformer_project(k, E, mask, triton)
    vp = linformer_project(v, E if F is None else F, mask, triton)
    if kp.shape[1] != H:  # one key/value head attended by every query head
        kp = kp.expand(B, H, kp.shape[2], kp.shape[3])
    if vp.shape[1] != H:  # (E and F may differ: one per head, one shared)
        vp = vp.expand(B, H, vp.shape[2], vp.shape[3])
    seed = 0
    if dropout_p > 0:  # drawn like pyops.reference.linformer.draw_seed
        seed = int(torch.randint(0, 2147483647, [1]).item())
    scale = 1.0 / math.sqrt(d)
    if triton:
        return torch.ops.pyops_triton.linformer_attend(q, kp, vp, scale, dropout_p, seed)[0]
    return torch.ops.pyops.linformer_attend(q, kp, vp, scale, dropout_p, seed)[0]


def sac_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_gamma: torch.Tensor,
    weight_beta: torch.Tensor,
    weight_diff: torch.Tensor,
    switch_weight: torch.Tensor,
    switch_bias: torch.Tensor | None,
    pre_weight: torch.Tensor,
    pre_bias: torch.Tensor | None,
    post_weight: torch.Tensor,
    post_bias: torch.Tensor | None,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    backend: str | None,
    algorithm: str | None = None,
) -> torch.Tensor:
    """:func:`pyops.sac_conv2d` for the parameters of a :class:`pyops.SAConv2d` (whose child
    convolutions type their biases as optional; SAConv2d always creates them). ``algorithm``
    None runs the composition, which is every backend's entry in pyops.sac.DEFAULT_ALGORITHMS."""
    assert switch_bias is not None
    assert pre_bias is not None
    assert post_bias is not None
    igemm = algorithm is not None and algorithm == "igemm"
    if backend is not None and backend == "triton":
        if igemm:
            return torch.ops.pyops_triton.sac_conv2d_igemm(
                x, weight, weight_gamma, weight_beta, weight_diff, switch_weight, switch_bias, pre_weight,
                pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups)[0]
        return torch.ops.pyops_triton.sac_conv2d(
            x, weight, weight_gamma, weight_beta, weight_diff, switch_weight, switch_bias, pre_weight,
            pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups)[0]
    if igemm:
        return torch.ops.pyops.sac_conv2d_igemm(
            x, weight, weight_gamma, weight_beta, weight_diff, switch_weight, switch_bias, pre_weight,
            pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups)[0]
    return torch.ops.pyops.sac_conv2d(
        x, weight, weight_gamma, weight_beta, weight_diff, switch_weight, switch_bias, pre_weight,
        pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups)[0]


AUGMENT_PIPE_ERROR = (
    "pyops.AugmentPipe cannot be compiled with torch.jit.script: it draws its per-sample "
    "augmentation parameters in Python (stages chosen by attribute name, parameters passed as a "
    "dict of keyword arguments), which TorchScript cannot compile. Use torch.compile(pipe) "
    "(or torch.export.export for a graph), or call pyops.ada.augment with parameters you draw "
    "yourself; the ops it runs (torch.ops.pyops.ada_geom_color, "
    "torch.ops.pyops.ada_filter_noise_cutout) can be called from TorchScript directly."
)
