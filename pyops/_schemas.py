"""Every pyops operator's schema, in one place.

One schema per op. The compiled extension defines each op listed here as ``pyops::<name>``
(``setup.py`` generates the C++ ``m.def`` lines from this table) and registers its C++ CPU and
CUDA kernels; the Triton kernel of the same op is registered from Python as
``pyops_triton::<name>`` with the same schema (:mod:`pyops._registry`), so it works without the
extension. Fake kernels and autograd are registered once per op for every backend.

This file is read by ``setup.py`` without importing pyops: keep it a plain dict of strings.
"""

SCHEMAS: dict[str, str] = {
    # ---- PointRend --------------------------------------------------------------------------
    # input (B, C, H, W), coords (N, P, 2) normalized (x, y); row n samples image batch_index[n]
    # (image n when None). Returns (N, C, P); bool/uint8 inputs sample to float32.
    "point_sample": "(Tensor input, Tensor coords, bool align_corners, Tensor? batch_index=None) -> Tensor",
    "point_sample_backward_input": (
        "(Tensor grad_output, Tensor input, Tensor coords, bool align_corners, Tensor? batch_index=None) -> Tensor"
    ),
    "point_sample_backward_coords": (
        "(Tensor grad_output, Tensor input, Tensor coords, bool align_corners, Tensor? batch_index=None) -> Tensor"
    ),
    # logits (R, C, H, W); the uncertainty is -|logit| of channel classes[r] (channel 0 when None)
    # at each of num_candidates points (drawn from `seed` with Philox, or supplied); returns
    # (R, num_points, 2): the num_uncertain most uncertain candidates, then fresh random points.
    "uncertain_point_coords": (
        "(Tensor logits, Tensor? classes, Tensor? candidates, Tensor seed, int num_points, "
        "int num_candidates, int num_uncertain) -> Tensor"
    ),
    # One subdivision step on one channel per row: logits (R, h, w) -> 2x bilinear upsample
    # (R, 2h, 2w), the flat indices (R, P) of its P = min(num_points, 4hw) most uncertain (-|logit|)
    # cells and their cell-centre coordinates (R, P, 2).
    "subdivision_step": "(Tensor logits, int num_points) -> (Tensor, Tensor, Tensor)",
    # ---- Linformer --------------------------------------------------------------------------
    # Projection along the sequence axis: x (B, H, n, d), E (n, k) shared by the heads or (H, n, k)
    # per head, key_padding_mask (B, n) bool, True = padding (its rows contribute nothing);
    # returns (B, H, k, d). The backward returns (grad_x, grad_E).
    "linformer_project": "(Tensor x, Tensor E, Tensor? key_padding_mask) -> Tensor",
    "linformer_project_backward": (
        "(Tensor grad_output, Tensor x, Tensor E, Tensor? key_padding_mask) -> (Tensor, Tensor)"
    ),
    # Attention of q (B, H, n, d) to the projected kp, vp (B, H, k, d): returns (out, lse), lse
    # (B, H, n) the log-sum-exp of each row's scores in float32 (float64 for float64 inputs).
    # Dropout on the attention probabilities draws its mask from `seed` (same mask in backward).
    "linformer_attend": "(Tensor q, Tensor kp, Tensor vp, float scale, float dropout_p, int seed) -> (Tensor, Tensor)",
    "linformer_attend_backward": (
        "(Tensor grad_output, Tensor q, Tensor kp, Tensor vp, Tensor out, Tensor lse, float scale, "
        "float dropout_p, int seed) -> (Tensor, Tensor, Tensor)"
    ),
    # ---- DetectoRS SAC ----------------------------------------------------------------------
    # x (N, C, H, W); weight and weight_diff (O, C/groups, kh, kw); weight_gamma/beta (O, 1, 1, 1);
    # switch (1, C, 1, 1) + (1,); pre-context (C, C, 1, 1) + (C,); post-context (O, O, 1, 1) + (O,);
    # bias (O,) added once after the blend. Returns (out, switch (N, 1, Ho, Wo), small - large
    # branch, x' = x + PreCtx(GAP(x)), GAP(x) (N, C), GAP(y) (N, O)); the last five are saved for
    # the backward (switch and means float, double for double x).
    "sac_conv2d": (
        "(Tensor x, Tensor weight, Tensor weight_gamma, Tensor weight_beta, Tensor weight_diff, "
        "Tensor switch_weight, Tensor switch_bias, Tensor pre_weight, Tensor pre_bias, "
        "Tensor post_weight, Tensor post_bias, Tensor? bias, int[2] stride, int[2] padding, "
        "int[2] dilation, int groups) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    # The gradients to (x, weight, weight_gamma, weight_beta, weight_diff, switch_weight,
    # switch_bias, pre_weight, pre_bias, post_weight, post_bias, bias).
    "sac_conv2d_backward": (
        "(Tensor grad_out, Tensor xp, Tensor weight, Tensor weight_gamma, Tensor weight_beta, "
        "Tensor weight_diff, Tensor switch_weight, Tensor pre_weight, Tensor post_weight, "
        "Tensor switch, Tensor branch_diff, Tensor x_mean, Tensor y_mean, int[2] stride, "
        "int[2] padding, int[2] dilation, int groups) -> Tensor[]"
    ),
    # The forward as one dual-accumulator implicit-GEMM kernel (same arguments and outputs; the
    # backward is the composition's).
    "sac_conv2d_igemm": (
        "(Tensor x, Tensor weight, Tensor weight_gamma, Tensor weight_beta, Tensor weight_diff, "
        "Tensor switch_weight, Tensor switch_bias, Tensor pre_weight, Tensor pre_bias, "
        "Tensor post_weight, Tensor post_bias, Tensor? bias, int[2] stride, int[2] padding, "
        "int[2] dilation, int groups) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "sac_conv2d_backward_igemm": (
        "(Tensor grad_out, Tensor xp, Tensor weight, Tensor weight_gamma, Tensor weight_beta, "
        "Tensor weight_diff, Tensor switch_weight, Tensor pre_weight, Tensor post_weight, "
        "Tensor switch, Tensor branch_diff, Tensor x_mean, Tensor y_mean, int[2] stride, "
        "int[2] padding, int[2] dilation, int groups) -> Tensor[]"
    ),
    # Deformable convolution v1: input (N, C, H, W), offset (N, 2 * offset_groups * kh * kw, Ho, Wo)
    # (dy, dx per kernel point, torchvision's layout), weight (O, C / groups, kh, kw), bias (O,).
    # Returns (N, O, Ho, Wo). The backward returns (grad_input, grad_offset, grad_weight).
    "deform_conv2d": (
        "(Tensor input, Tensor offset, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
        "int[2] dilation, int groups, int offset_groups) -> Tensor"
    ),
    "deform_conv2d_backward": (
        "(Tensor grad_out, Tensor input, Tensor offset, Tensor weight, int[2] stride, int[2] padding, "
        "int[2] dilation, int groups, int offset_groups) -> (Tensor, Tensor, Tensor)"
    ),
    # ---- StyleGAN2-ADA ----------------------------------------------------------------------
    # images (B, C, H, W), C in {1, 3}; G_inv (B, 3, 3) maps output pixels to input pixels
    # (centred coordinates), C (B, 4, 4) maps colours (homogeneous); either may be None (stage
    # skipped). The backward is the adjoint of the linear part (colour offset dropped): its own
    # backward is the forward again, so gradients of any order work.
    "ada_geom_color": "(Tensor images, Tensor? G_inv, Tensor? C) -> Tensor",
    "ada_geom_color_backward": "(Tensor grad, Tensor? G_inv, Tensor? C) -> Tensor",
    # filters (B, 43) per-sample filter taps (None: no filtering), sigma (B,) and noise (like
    # images) additive noise, boxes (B, 4) cutout (centre x, centre y, width, height as fractions).
    # The backward is the adjoint of the linear part (the noise drops out).
    "ada_filter_noise_cutout": (
        "(Tensor images, Tensor? filters, Tensor? sigma, Tensor? noise, Tensor? boxes) -> Tensor"
    ),
    "ada_filter_noise_cutout_backward": "(Tensor grad, Tensor? filters, Tensor? boxes) -> Tensor",
}
