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

  // StyleGAN2-ADA. images (B, C, H, W), C in {1, 3}; G_inv (B, 3, 3) maps output pixels to
  // input pixels (centred coordinates), C (B, 4, 4) maps colours (homogeneous); either may be
  // None (stage skipped). The backward is the adjoint of the linear part (colour offset dropped):
  // its own backward is the forward again, so gradients of any order work.
  m.def("ada_geom_color(Tensor images, Tensor? G_inv, Tensor? C) -> Tensor");
  m.def("ada_geom_color_backward(Tensor grad, Tensor? G_inv, Tensor? C) -> Tensor");
  m.def("ada_geom_color_triton(Tensor images, Tensor? G_inv, Tensor? C) -> Tensor");
  m.def("ada_geom_color_backward_triton(Tensor grad, Tensor? G_inv, Tensor? C) -> Tensor");
  // filters (B, 43) per-sample filter taps (None: no filtering), sigma (B,) and noise (like
  // images) additive noise, boxes (B, 4) cutout (centre x, centre y, width, height as fractions).
  // The backward is the adjoint of the linear part (the noise drops out).
  m.def(
      "ada_filter_noise_cutout(Tensor images, Tensor? filters, Tensor? sigma, Tensor? noise, "
      "Tensor? boxes) -> Tensor");
  m.def("ada_filter_noise_cutout_backward(Tensor grad, Tensor? filters, Tensor? boxes) -> Tensor");
  m.def(
      "ada_filter_noise_cutout_triton(Tensor images, Tensor? filters, Tensor? sigma, Tensor? noise, "
      "Tensor? boxes) -> Tensor");
  m.def("ada_filter_noise_cutout_backward_triton(Tensor grad, Tensor? filters, Tensor? boxes) -> Tensor");
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
