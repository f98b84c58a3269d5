// The XLA FFI handler symbols of pyops._jax_ffi: one X(name, symbol) per target, so the module
// table (module.cpp) and the definitions (jax_cpu.cpp, jax_cuda.cu) cannot drift apart.
#pragma once

#include "xla/ffi/api/c_api.h"

#define PYOPS_JAX_CPU_TARGETS(X)                                                 \
  X("pyops_point_sample", PyopsPointSampleCpu)                                   \
  X("pyops_point_sample_backward_coords", PyopsPointSampleBackwardCoordsCpu)     \
  X("pyops_point_sample_backward_input", PyopsPointSampleBackwardInputCpu)       \
  X("pyops_linformer_attend", PyopsLinformerAttendCpu)                           \
  X("pyops_linformer_attend_backward", PyopsLinformerAttendBackwardCpu)          \
  X("pyops_ada_geom_color", PyopsAdaGeomColorCpu)                                \
  X("pyops_ada_geom_color_backward", PyopsAdaGeomColorBackwardCpu)               \
  X("pyops_ada_filter_noise_cutout", PyopsAdaFilterCpu)                          \
  X("pyops_ada_filter_noise_cutout_backward", PyopsAdaFilterBackwardCpu)

#define PYOPS_JAX_CUDA_TARGETS(X)                                                \
  X("pyops_point_sample", PyopsPointSampleCuda)                                  \
  X("pyops_point_sample_backward_coords", PyopsPointSampleBackwardCoordsCuda)    \
  X("pyops_point_sample_backward_input", PyopsPointSampleBackwardInputCuda)      \
  X("pyops_linformer_attend", PyopsLinformerAttendCuda)                          \
  X("pyops_linformer_attend_backward", PyopsLinformerAttendBackwardCuda)         \
  X("pyops_ada_geom_color", PyopsAdaGeomColorCuda)                               \
  X("pyops_ada_geom_color_backward", PyopsAdaGeomColorBackwardCuda)              \
  X("pyops_ada_filter_noise_cutout", PyopsAdaFilterCuda)                         \
  X("pyops_ada_filter_noise_cutout_backward", PyopsAdaFilterBackwardCuda)

#define PYOPS_JAX_DECLARE(name, symbol) extern "C" XLA_FFI_Error* symbol(XLA_FFI_CallFrame*);
PYOPS_JAX_CPU_TARGETS(PYOPS_JAX_DECLARE)
#ifdef PYOPS_WITH_CUDA
PYOPS_JAX_CUDA_TARGETS(PYOPS_JAX_DECLARE)
#endif
#undef PYOPS_JAX_DECLARE
