"""pyops' kernels for JAX: XLA FFI custom calls that work under ``jax.jit`` and ``jax.grad``.

The functions here call the same C++/CUDA kernels as the torch ops (through ``pyops._jax_ffi``, a
second, libtorch-free binding built when jax is installed at build time), on CPU and CUDA devices::

    import jax, jax.numpy as jnp
    import pyops.jax as pj

    x = jax.random.normal(jax.random.key(0), (2, 8, 32, 32))
    pts = jax.random.uniform(jax.random.key(1), (2, 100, 2))
    y = jax.jit(pj.point_sample)(x, pts)                                # (2, 8, 100)
    gx = jax.grad(lambda x: pj.point_sample(x, pts).sum())(x)

Kernels compute in float32: float16/bfloat16/float32 inputs are accepted (the result has the
input's dtype), other dtypes raise ``TypeError``. Gradients come from the ops' backward kernels
(``jax.custom_vjp``); first order only.
"""

from __future__ import annotations

import functools
import math

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as _exc:  # pragma: no cover - exercised only without jax
    raise ImportError(
        "pyops.jax needs JAX: install it (`pip install jax`; on NVIDIA GPUs `pip install 'jax[cuda13]'`), "
        "then rebuild pyops (`pip install --no-build-isolation -e .`) so that its JAX binding is compiled"
    ) from _exc

try:
    from pyops import _jax_ffi
except ImportError as _exc:
    raise ImportError(
        "pyops.jax: this pyops was built without its JAX binding (pyops._jax_ffi), because jax was not "
        "installed when pyops was built; with jax installed, rebuild it: "
        "`pip install --no-build-isolation -e .` (add FORCE_CUDA=1 for the CUDA kernels)"
    ) from _exc

__all__ = [
    "point_sample",
    "linformer_attention",
    "linformer_project",
    "ada_geometric_color",
    "ada_filter_noise_cutout",
    "WITH_CUDA",
]

#: Whether the CUDA handlers were compiled (a CUDA build of pyops).
WITH_CUDA: bool = bool(_jax_ffi.with_cuda())


def _register() -> None:
    for name, capsule in _jax_ffi.cpu_targets().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    if WITH_CUDA:
        for name, capsule in _jax_ffi.cuda_targets().items():
            jax.ffi.register_ffi_target(name, capsule, platform="CUDA")


_register()

_KERNEL_DTYPE = jnp.float32
_FLOATS = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
_NO_ARRAY = np.zeros((0,), np.float32)  # stands in for an absent optional argument


def _float_array(fn: str, name: str, x) -> jax.Array:
    """``x`` as a JAX array, checked to be float16/bfloat16/float32."""
    x = jnp.asarray(x)
    if x.dtype not in _FLOATS:
        raise TypeError(f"pyops.jax.{fn}: {name} must be float16, bfloat16 or float32, got {x.dtype}")
    return x


def _shape_error(fn: str, name: str, want: str, x) -> ValueError:
    return ValueError(f"pyops.jax.{fn}: {name} must have shape {want}, got {tuple(x.shape)}")


def _f32(x: jax.Array) -> jax.Array:
    return x.astype(_KERNEL_DTYPE)


def _out(shape, like=_KERNEL_DTYPE) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), like)


# ---- point_sample ------------------------------------------------------------------------------


def point_sample(input, point_coords, align_corners: bool = False) -> jax.Array:
    """Bilinear samples of a feature map at normalized points (PointRend's ``point_sample``).

    Args:
        input: (N, C, H, W) features, float16/bfloat16/float32.
        point_coords: (N, P, 2) or (N, Hg, Wg, 2) points ``(x, y)`` in ``[0, 1]`` (x first), float.
        align_corners: as in ``F.grid_sample``; ``False`` maps ``u`` to pixel ``u * W - 0.5``.

    Returns:
        (N, C, P) or (N, C, Hg, Wg) in ``input.dtype``: exactly ``grid_sample(input, 2 * coords - 1)``
        with bilinear interpolation and zero padding, as :func:`pyops.point_sample`. Differentiable
        with respect to ``input`` and ``point_coords`` (the input gradient is deterministic).
    """
    fn = "point_sample"
    x = _float_array(fn, "input", input)
    c = _float_array(fn, "point_coords", point_coords)
    if x.ndim != 4 or x.shape[2] == 0 or x.shape[3] == 0:
        raise _shape_error(fn, "input", "(N, C, H, W) with H, W > 0", x)
    if c.ndim not in (3, 4) or c.shape[0] != x.shape[0] or c.shape[-1] != 2:
        raise _shape_error(fn, "point_coords", f"(N, P, 2) or (N, Hg, Wg, 2) with N = {x.shape[0]}", c)
    if not isinstance(align_corners, (bool, np.bool_)):
        raise TypeError(f"pyops.jax.{fn}: align_corners must be a bool, got {align_corners!r}")
    flat = c.reshape(c.shape[0], -1, 2)
    out = _point_sample(_f32(x), _f32(flat), bool(align_corners)).astype(x.dtype)
    return out.reshape(*out.shape[:2], *c.shape[1:-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _point_sample(x: jax.Array, coords: jax.Array, align_corners: bool) -> jax.Array:
    N, C = x.shape[:2]
    P = coords.shape[1]
    if N * C * P == 0:
        return jnp.zeros((N, C, P), _KERNEL_DTYPE)
    call = jax.ffi.ffi_call("pyops_point_sample", _out((N, C, P)))
    return call(x, coords, align_corners=np.bool_(align_corners))


def _point_sample_fwd(x, coords, align_corners):
    return _point_sample(x, coords, align_corners), (x, coords)


def _point_sample_bwd(align_corners, residuals, grad):
    x, coords = residuals
    if x.size == 0 or coords.size == 0:
        return jnp.zeros_like(x), jnp.zeros_like(coords)
    flag = np.bool_(align_corners)
    grad_x = jax.ffi.ffi_call("pyops_point_sample_backward_input", _out(x.shape))(grad, x, coords, align_corners=flag)
    grad_c = jax.ffi.ffi_call("pyops_point_sample_backward_coords", _out(coords.shape))(
        grad, x, coords, align_corners=flag
    )
    return grad_x, grad_c


_point_sample.defvjp(_point_sample_fwd, _point_sample_bwd)


# ---- Linformer -----------------------------------------------------------------------------------


def linformer_project(x, E, key_padding_mask=None) -> jax.Array:
    """Projects keys or values along the sequence: ``Eᵀ x`` per head, (B, H, n, d) -> (B, H, k, d).

    ``E`` is (n_max, k) shared by the heads or (H, n_max, k) per head (its first n rows are used);
    ``key_padding_mask`` (B, n) bool zeroes the padded rows of ``x`` first. A GEMM (XLA's own), in
    float32; the result has x's dtype.
    """
    fn = "linformer_project"
    x = _float_array(fn, "x", x)
    if x.ndim != 4:
        raise _shape_error(fn, "x", "(B, H, n, d)", x)
    E = _check_projection(fn, "E", E, x.shape[2], None)
    mask = _check_mask(fn, key_padding_mask, x.shape[0], x.shape[2])
    return _project(_f32(x), _f32(E), mask).astype(x.dtype)


def _check_projection(fn: str, name: str, E, n: int, heads: int | None) -> jax.Array:
    E = _float_array(fn, name, E)
    ok = E.ndim == 2 or (E.ndim == 3 and (heads is None or E.shape[0] == heads))
    if not ok or E.shape[-2] < n or E.shape[-1] < 1:
        want = f"(n_max, k) or (H, n_max, k) with n_max >= n = {n}" + ("" if heads is None else f", H = {heads}")
        raise _shape_error(fn, name, want, E)
    return E


def _check_mask(fn: str, mask, B: int, n: int):
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"pyops.jax.{fn}: key_padding_mask must be a bool array, got {mask.dtype}")
    if mask.shape != (B, n):
        raise _shape_error(fn, "key_padding_mask", f"(B, n) = ({B}, {n})", mask)
    return mask


def _project(x: jax.Array, E: jax.Array, mask) -> jax.Array:
    n = x.shape[2]
    if mask is not None:
        x = jnp.where(mask[:, None, :, None], jnp.zeros((), x.dtype), x)
    E = E[..., :n, :]
    # (k, n) @ (B, H, n, d) or (H, k, n) @ (B, H or 1, n, d), broadcasting like torch.matmul;
    # full float32 precision like torch's (XLA's default on GPUs rounds float32 through TF32)
    return jnp.matmul(jnp.swapaxes(E, -1, -2), x, precision=jax.lax.Precision.HIGHEST)


def linformer_attention(
    q,
    k,
    v,
    E,
    F=None,
    *,
    key_padding_mask=None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    causal: bool = False,
    seed: int = 0,
) -> jax.Array:
    """Linformer attention ``softmax(q (Eᵀ k)ᵀ · scale) (Fᵀ v)`` per head, as :func:`pyops.linformer_attention`.

    Args:
        q: (B, H, n_q, d) queries; k, v: (B, H, n, d) or (B, 1, n, d) (one key/value head).
        E, F: (n_max, k) or (H, n_max, k) projections, n_max >= n; ``F=None`` shares E.
        key_padding_mask: optional (B, n) bool, True marks padded keys/values.
        dropout_p: dropout on the attention probabilities; the mask is a pure function of
            ``seed`` (a static Python int), the query row and the projected key, the same mask
            the torch kernels draw for that seed.
        scale: score scale, default ``1/sqrt(d)``.
        causal: must be False (Linformer has no causal variant).
        seed: dropout seed, used only when ``dropout_p > 0``.

    Returns (B, H, n_q, d) in q's dtype, computed in float32. Differentiable with respect to q,
    k, v, E and F (the attention through its backward kernels, the projections by XLA).
    On CUDA the head dim d is at most 128.
    """
    fn = "linformer_attention"
    if causal:
        raise ValueError(f"pyops.jax.{fn}: causal=True is not supported: Linformer's projection mixes future "
                         "positions into every projected key, so there is no causal variant")
    q = _float_array(fn, "q", q)
    k = _float_array(fn, "k", k)
    v = _float_array(fn, "v", v)
    if q.ndim != 4 or q.shape[3] == 0:
        raise _shape_error(fn, "q", "(B, H, n_q, d) with d > 0", q)
    B, H, _, d = q.shape
    for name, t in (("k", k), ("v", v)):
        if t.ndim != 4 or t.shape[0] != B or t.shape[1] not in (1, H) or t.shape[3] != d:
            raise _shape_error(fn, name, f"(B, H, n, d) = ({B}, {H}, n, {d}) or ({B}, 1, n, {d})", t)
    if k.shape != v.shape:
        raise ValueError(f"pyops.jax.{fn}: k and v must have the same shape, got {k.shape} and {v.shape}")
    n = k.shape[2]
    E = _check_projection(fn, "E", E, n, H)
    if F is not None:
        F = _check_projection(fn, "F", F, n, H)
        if F.shape[-1] != E.shape[-1]:
            raise ValueError(f"pyops.jax.{fn}: E and F must project to the same k, got {E.shape} and {F.shape}")
    mask = _check_mask(fn, key_padding_mask, B, n)
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"pyops.jax.{fn}: dropout_p must be a number in [0, 1], got {dropout_p!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"pyops.jax.{fn}: scale must be a finite number or None, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"pyops.jax.{fn}: seed must be a Python int (static under jit), got {type(seed).__name__}")
    kp = _project(_f32(k), _f32(E), mask)
    vp = _project(_f32(v), _f32(E if F is None else F), mask)
    kp = jnp.broadcast_to(kp, (B, H, *kp.shape[2:]))
    vp = jnp.broadcast_to(vp, (B, H, *vp.shape[2:]))
    out = _attend(_f32(q), kp, vp, float(scale), float(dropout_p), int(seed) if dropout_p > 0 else 0)
    return out.astype(q.dtype)


def _attend_attrs(scale: float, dropout_p: float, seed: int) -> dict:
    return dict(scale=np.float64(scale), dropout_p=np.float64(dropout_p), seed=np.int64(seed))


def _attend_call(q, kp, vp, scale, dropout_p, seed):
    B, H, n, d = q.shape
    if B * H * n == 0:
        return jnp.zeros(q.shape, _KERNEL_DTYPE), jnp.zeros((B, H, n), _KERNEL_DTYPE)
    call = jax.ffi.ffi_call("pyops_linformer_attend", (_out(q.shape), _out((B, H, n))))
    return call(q, kp, vp, **_attend_attrs(scale, dropout_p, seed))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _attend(q, kp, vp, scale: float, dropout_p: float, seed: int) -> jax.Array:
    return _attend_call(q, kp, vp, scale, dropout_p, seed)[0]


def _attend_fwd(q, kp, vp, scale, dropout_p, seed):
    out, lse = _attend_call(q, kp, vp, scale, dropout_p, seed)
    return out, (q, kp, vp, out, lse)


def _attend_bwd(scale, dropout_p, seed, residuals, grad):
    q, kp, vp, out, lse = residuals
    if q.size == 0:
        return jnp.zeros_like(q), jnp.zeros_like(kp), jnp.zeros_like(vp)
    delta = jnp.sum(grad * out, axis=-1)  # D_i = <dO_i, O_i>
    call = jax.ffi.ffi_call("pyops_linformer_attend_backward", (_out(q.shape), _out(kp.shape), _out(vp.shape)))
    return tuple(call(grad, q, kp, vp, lse, delta, **_attend_attrs(scale, dropout_p, seed)))


_attend.defvjp(_attend_fwd, _attend_bwd)


# ---- ADA -------------------------------------------------------------------------------------------


def _check_images(fn: str, images) -> jax.Array:
    x = _float_array(fn, "images", images)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] == 0 or x.shape[3] == 0:
        raise _shape_error(fn, "images", "(B, C, H, W) with C = 1 or 3 and H, W > 0", x)
    return x


def _check_param(fn: str, name: str, t, shape: tuple) -> jax.Array | None:
    if t is None:
        return None
    t = _float_array(fn, name, t)
    if t.shape != shape:
        raise _shape_error(fn, name, str(shape), t)
    return _f32(t)


def ada_geometric_color(images, G_inv=None, C=None) -> jax.Array:
    """The fused geometric + colour stage of StyleGAN2-ADA, as :func:`pyops.ada.geometric_color`.

    Args:
        images: (B, C, H, W) with C = 1 or 3, float16/bfloat16/float32 (computed in float32).
        G_inv: (B, 3, 3) inverse geometric matrices (output pixel -> input pixel, centred
            coordinates), or None to skip the geometric stage.
        C: (B, 4, 4) homogeneous colour matrices, or None to skip the colour stage.

    Returns (B, C, H, W) in ``images.dtype``. Differentiable with respect to ``images`` (the
    adjoint kernel); like the torch op, not with respect to ``G_inv`` or ``C``: their gradients
    are zero.
    """
    fn = "ada_geometric_color"
    x = _check_images(fn, images)
    B = x.shape[0]
    G = _check_param(fn, "G_inv", G_inv, (B, 3, 3))
    Cm = _check_param(fn, "C", C, (B, 4, 4))
    if B == 0 or (G is None and Cm is None):
        return x
    has_g, has_c = G is not None, Cm is not None
    G = jax.lax.stop_gradient(G) if has_g else _NO_ARRAY
    Cm = jax.lax.stop_gradient(Cm) if has_c else _NO_ARRAY
    return _geom_color(_f32(x), G, Cm, has_g, has_c).astype(x.dtype)


def _geom_color_call(target: str, x, G, Cm, has_g: bool, has_c: bool):
    call = jax.ffi.ffi_call(target, _out(x.shape))
    return call(x, G, Cm, has_g=np.bool_(has_g), has_c=np.bool_(has_c))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _geom_color(x, G, Cm, has_g: bool, has_c: bool) -> jax.Array:
    return _geom_color_call("pyops_ada_geom_color", x, G, Cm, has_g, has_c)


def _geom_color_fwd(x, G, Cm, has_g, has_c):
    return _geom_color(x, G, Cm, has_g, has_c), (G, Cm)


def _geom_color_bwd(has_g, has_c, residuals, grad):
    G, Cm = residuals
    grad_x = _geom_color_call("pyops_ada_geom_color_backward", grad, G, Cm, has_g, has_c)
    return grad_x, jnp.zeros_like(G), jnp.zeros_like(Cm)


_geom_color.defvjp(_geom_color_fwd, _geom_color_bwd)


def ada_filter_noise_cutout(images, filters=None, sigma=None, noise=None, boxes=None) -> jax.Array:
    """The fused filtering + noise + cutout stage of StyleGAN2-ADA, as :func:`pyops.ada.filter_noise_cutout`.

    Args:
        images: (B, C, H, W), C = 1 or 3, float16/bfloat16/float32; H, W >= 22 when filtering.
        filters: (B, 43) per-sample filter taps applied separably after a 21-pixel reflect pad.
        sigma, noise: (B,) strengths and a (B, C, H, W) standard normal field (e.g. from
            ``jax.random.normal``), added as ``noise * sigma``; both or neither.
        boxes: (B, 4) cutout boxes (centre x, centre y, width, height; fractions of the image).

    Returns (B, C, H, W) in ``images.dtype``; differentiable with respect to ``images`` (the
    adjoint kernel); the parameters get zero gradients.
    """
    fn = "ada_filter_noise_cutout"
    x = _check_images(fn, images)
    B = x.shape[0]
    h = _check_param(fn, "filters", filters, (B, 43))
    s = _check_param(fn, "sigma", sigma, (B,))
    nz = _check_param(fn, "noise", noise, tuple(x.shape))
    bx = _check_param(fn, "boxes", boxes, (B, 4))
    if (s is None) != (nz is None):
        raise ValueError(f"pyops.jax.{fn}: sigma and noise must be given together")
    if h is not None and min(x.shape[2:]) <= 21:
        raise ValueError(f"pyops.jax.{fn}: filtering needs H and W of at least 22 (a 21-pixel reflect pad), "
                         f"got shape {tuple(x.shape)}")
    flags = (h is not None, s is not None, bx is not None)
    if B == 0 or not any(flags):
        return x
    args = [jax.lax.stop_gradient(t) if t is not None else _NO_ARRAY for t in (h, s, nz, bx)]
    return _filter(_f32(x), *args, *flags).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _filter(x, h, s, nz, bx, has_filter: bool, has_noise: bool, has_boxes: bool) -> jax.Array:
    call = jax.ffi.ffi_call("pyops_ada_filter_noise_cutout", _out(x.shape))
    return call(x, h, s, nz, bx, has_filter=np.bool_(has_filter), has_noise=np.bool_(has_noise),
                has_boxes=np.bool_(has_boxes))


def _filter_fwd(x, h, s, nz, bx, has_filter, has_noise, has_boxes):
    return _filter(x, h, s, nz, bx, has_filter, has_noise, has_boxes), (h, s, nz, bx)


def _filter_bwd(has_filter, has_noise, has_boxes, residuals, grad):
    h, s, nz, bx = residuals
    call = jax.ffi.ffi_call("pyops_ada_filter_noise_cutout_backward", _out(grad.shape))
    grad_x = call(grad, h, bx, has_filter=np.bool_(has_filter), has_boxes=np.bool_(has_boxes))
    return (grad_x, *(jnp.zeros_like(t) for t in (h, s, nz, bx)))


_filter.defvjp(_filter_fwd, _filter_bwd)
