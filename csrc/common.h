// Small helpers shared by every op family; compiles for host (C++) and device (CUDA).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define PYOPS_HD __host__ __device__ __forceinline__
#else
#define PYOPS_HD inline
#endif
