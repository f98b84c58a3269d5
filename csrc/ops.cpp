// Defines the pyops operators. Their schemas live in one place, pyops/_schemas.py; setup.py
// generates pyops_schemas.h from it (PYOPS_SCHEMAS: one "name(args) -> returns" string per op).
// Kernels are registered per dispatch key next to their implementations (csrc/<family>/*_cpu.cpp,
// *_cuda.cu); the Triton kernels, fake kernels and autograd are registered from Python
// (pyops/_registry.py and each family's ops module).
#include <Python.h>
#include <torch/library.h>

#include "pyops_schemas.h"

TORCH_LIBRARY(pyops, m) {
  for (const char* schema : PYOPS_SCHEMAS) m.def(schema);
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
