"""What scripts/kernel_report.py holds every sm_90 kernel to, in one place.

A kernel is named ``<source>:<name>``: ``cuda:`` and the demangled name of a kernel of the
extension (``cuda:void pyops::ada::forward_tiled<float, 3>(...)``), or ``triton:`` and the name
of a ``@triton.jit`` function of kernels/. Patterns are regular expressions searched in that name.

Rules (``--check`` fails on a broken one that no exception below accepts):

* ``spill``: a kernel on a benchmarked hot path (:data:`HOT_PATHS`) has a stack frame or
  local-memory loads/stores;
* ``fp64``: a kernel instantiated for float, half or bfloat16 contains an fp64 instruction;
* ``occupancy``: a kernel on a hot path whose registers allow fewer threads per SM (64K
  registers per SM, in whole blocks of its threads) than its design's target (:data:`OCCUPANCY`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

# (pattern, dtypes): the kernels the benchmarks time (benchmarks/bench_*.py), in the dtypes they
# time them in (a Triton kernel's dtype is that of its first floating-point pointer: the SAC
# op-math kernels take float32 in the bf16 cases). The float64 instantiations serve gradcheck.
HOT_PATHS: list[tuple[str, tuple[str, ...]]] = [
    (r"^cuda:.*pyops::pointrend::", ("float32",)),
    (r"^triton:(point_sample_(fwd|corner_keys|segments)|score_candidates|pick_points|upsample|grid_points)_kernel",
     ("float32",)),
    (r"^cuda:.*pyops::linformer::", ("bfloat16",)),
    (r"^triton:(project|attend)_", ("bfloat16",)),
    (r"^cuda:.*pyops::sac::", ("bfloat16",)),
    (r"^cuda:.*pyops::deform::", ("bfloat16",)),
    (r"^triton:(im2col|col2im|offset_grad)_kernel", ("bfloat16",)),
    (r"^triton:(linear|linear_backward|context_switch_dot|switch_pool|switch_pool_adjoint|aws|aws_backward|"
     r"blend_forward|blend_backward|input_grad_sums|input_grad|dual_conv)_kernel", ("bfloat16", "float32")),
    (r"^cuda:.*pyops::ada::", ("float32",)),
    (r"^triton:(geom_color_fwd|grid_adjoint|pixel_adjoint|filter_fwd|filter_adjoint)_kernel", ("float32",)),
]

# (pattern, threads per SM): the resident threads each design note counts on; the first match
# wins. Provisional: 1024 for memory-bound kernels (the default), 512 for compute-bound ones
# (tensor-core tiles: the Linformer projection and attention, the SAC implicit GEMM).
COMPUTE_BOUND, MEMORY_BOUND = 512, 1024
OCCUPANCY: list[tuple[str, int]] = [
    (r"linformer::.*(attend|project)|^triton:(attend|project)_|dual_conv", COMPUTE_BOUND),
]


class Accepted(NamedTuple):
    pattern: str
    rule: str
    reason: str
    issue: int


# Today's known flaws, each with the issue that removes it (#15 Linformer, #16 PointRend, #17 ADA,
# #18 SAC). A fix makes its entry stale, which the report flags: delete it then.
EXCEPTIONS: list[Accepted] = [
    # ---- Linformer (#15) ----
    Accepted(r"^cuda:.*pyops::linformer::cuda::attend_(fwd|dq|dkv)_kernel<c10::BFloat16, float, (64|128)>", "spill",
             "SIMT attention: 255 registers and 112-2168 bytes of stack per thread at 64/128", 15),
    Accepted(r"^cuda:.*pyops::linformer::cuda::attend_(fwd|dq|dkv)_kernel<c10::BFloat16", "occupancy",
             "164-255 registers x 64 threads: 256-384 threads/SM", 15),
    Accepted(r"^triton:attend_dkv_kernel$", "occupancy", "204 registers x 4 warps: 256 threads/SM", 15),
    # ---- PointRend (#16) ----
    Accepted(r"^triton:point_sample_(fwd|segments)_kernel$", "spill",
             "NCHW: 255 registers, 8 (forward) and 624 (input gradient) bytes of stack", 16),
    Accepted(r"^triton:point_sample_(fwd|segments)_kernel$", "occupancy",
             "164-255 registers x 4 warps: 256-384 threads/SM", 16),
    # ---- ADA (#17) ----
    Accepted(r"^cuda:.*pyops::ada::kernels::(forward|forward_tiled|grid_adjoint|pixel_adjoint)_kernel"
             r"<(float|c10::Half|c10::BFloat16), float>", "fp64",
             "37-197 fp64 instructions: the sym6 taps indexed at run time with a double division", 17),
    Accepted(r"^cuda:.*pyops::ada::kernels::(color_t|filter_adjoint|forward|forward_tiled|grid_adjoint|pixel_adjoint)"
             r"_kernel<float", "spill", "16-160 bytes of stack per thread", 17),
    Accepted(r"^cuda:.*pyops::ada::kernels::(filter_adjoint|forward|forward_tiled|grid_adjoint|pixel_adjoint)_kernel"
             r"<float", "occupancy", "68-128 registers: 512-896 threads/SM", 17),
    Accepted(r"^triton:(filter_adjoint|geom_color_fwd|pixel_adjoint)_kernel$", "spill",
             "255 registers, 32-160 bytes of stack", 17),
    Accepted(r"^triton:(filter_adjoint|filter_fwd|geom_color_fwd|grid_adjoint|pixel_adjoint)_kernel$", "occupancy",
             "242-255 registers x 4 warps: 256 threads/SM", 17),
    # ---- SAC (#18) ----
    Accepted(r"^triton:(im2col|col2im|offset_grad)_kernel$", "occupancy",
             "80-168 registers x 4 warps (16-channel x 128-pixel tiles): 384-768 threads/SM; the CUDA kernels "
             "(the default) reach 1024", 18),
    Accepted(r"^triton:dual_conv_kernel$", "spill",
             "autotuning candidate BLOCK_M 128 BLOCK_N 64 BLOCK_K 64: 255 registers, 8-16 bytes of stack", 18),
    Accepted(r"^triton:dual_conv_kernel$", "occupancy",
             "134-255 registers: 256-384 threads/SM in all but one autotuning candidate", 18),
    Accepted(r"^cuda:.*pyops::sac::.*dual_conv_wmma_kernel<c10::BFloat16>", "occupancy",
             "168 registers x 128 threads: 384 threads/SM", 18),
    Accepted(r"^triton:switch_pool(_adjoint)?_kernel$", "spill",
             "BLOCK 1024 on 4 warps: 255 registers and 168-632 bytes of stack (the 200x200 adjoint: 32 registers, "
             "7864 bytes)", 18),
    Accepted(r"^triton:switch_pool(_adjoint)?_kernel$", "occupancy", "255 registers x 4 warps: 256 threads/SM", 18),
    Accepted(r"^triton:linear_backward_kernel$", "occupancy", "80-96 registers: 640-768 threads/SM", 18),
    Accepted(r"^cuda:.*pyops::sac::.*aws_backward_kernel<c10::BFloat16", "occupancy",
             "66 registers: 896 threads/SM", 18),
]


def hot(name: str, dtype: str | None) -> bool:
    return any(re.search(pattern, name) and dtype in dtypes for pattern, dtypes in HOT_PATHS)


def occupancy_target(name: str) -> int:
    return next((threads for pattern, threads in OCCUPANCY if re.search(pattern, name)), MEMORY_BOUND)


def exception(name: str, rule: str) -> Accepted | None:
    return next((e for e in EXCEPTIONS if e.rule == rule and re.search(e.pattern, name)), None)
