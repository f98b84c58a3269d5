// Every pyops operator schema, in one place. Kernels are registered per dispatch key next
// to their implementations (csrc/<family>/*_cpu.cpp, *_cuda.cu); the Triton variants
// (suffix _triton) get their kernels from Python (pyops/<family>.py); fake kernels and
// autograd are registered in Python (pyops/<family>.py).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(pyops, m) {
  // PointRend. input (N, C, H, W), coords (N, P, 2) normalized (x, y); returns (N, C, P).
  m.def("point_sample(Tensor input, Tensor coords, bool align_corners) -> Tensor");
  m.def(
      "point_sample_backward_input(Tensor grad_output, Tensor input, Tensor coords, "
      "bool align_corners) -> Tensor");
  m.def(
      "point_sample_backward_coords(Tensor grad_output, Tensor input, Tensor coords, "
      "bool align_corners) -> Tensor");
  m.def("point_sample_triton(Tensor input, Tensor coords, bool align_corners) -> Tensor");
  m.def(
      "point_sample_backward_input_triton(Tensor grad_output, Tensor input, Tensor coords, "
      "bool align_corners) -> Tensor");
  m.def(
      "point_sample_backward_coords_triton(Tensor grad_output, Tensor input, Tensor coords, "
      "bool align_corners) -> Tensor");
}

// `import pyops._C` loads this library, which runs the registrations above. The module
// itself only reports how it was built.
static struct PyModuleDef pyops_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&pyops_module);
  if (m == nullptr) return nullptr;
#ifdef PYOPS_WITH_CUDA
  PyModule_AddIntConstant(m, "WITH_CUDA", 1);
#else
  PyModule_AddIntConstant(m, "WITH_CUDA", 0);
#endif
#ifdef _OPENMP
  PyModule_AddIntConstant(m, "WITH_OPENMP", 1);
#else
  PyModule_AddIntConstant(m, "WITH_OPENMP", 0);
#endif
  return m;
}
