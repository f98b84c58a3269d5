// pyops._jax_ffi: a tiny CPython module (stable ABI, no pybind11, no libtorch) that hands the
// XLA FFI handlers to Python as PyCapsules; pyops/jax.py registers them with
// jax.ffi.register_ffi_target.
#define Py_LIMITED_API 0x030A0000
#include <Python.h>

#include "targets.h"

namespace {

// {name: capsule} of the handlers of one platform.
PyObject* table(bool cuda) {
  PyObject* out = PyDict_New();
  if (!out) return nullptr;
  bool ok = true;
#define PYOPS_JAX_ADD(name, symbol)                                                        \
  if (ok) {                                                                                \
    PyObject* cap = PyCapsule_New(reinterpret_cast<void*>(&symbol), nullptr, nullptr);      \
    ok = cap && PyDict_SetItemString(out, name, cap) == 0;                                  \
    Py_XDECREF(cap);                                                                       \
  }
  if (!cuda) {
    PYOPS_JAX_CPU_TARGETS(PYOPS_JAX_ADD)
  } else {
#ifdef PYOPS_WITH_CUDA
    PYOPS_JAX_CUDA_TARGETS(PYOPS_JAX_ADD)
#endif
  }
#undef PYOPS_JAX_ADD
  if (!ok) {
    Py_DECREF(out);
    return nullptr;
  }
  return out;
}

PyObject* cpu_targets(PyObject*, PyObject*) { return table(false); }
PyObject* cuda_targets(PyObject*, PyObject*) { return table(true); }

PyObject* with_cuda(PyObject*, PyObject*) {
#ifdef PYOPS_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"cpu_targets", cpu_targets, METH_NOARGS, "{target name: PyCapsule} of the CPU XLA FFI handlers."},
    {"cuda_targets", cuda_targets, METH_NOARGS,
     "{target name: PyCapsule} of the CUDA XLA FFI handlers (empty without CUDA)."},
    {"with_cuda", with_cuda, METH_NOARGS, "Whether the CUDA handlers were compiled."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_jax_ffi",
                          "XLA FFI handlers of pyops' kernels, for pyops.jax.", -1, methods,
                          nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__jax_ffi(void) { return PyModule_Create(&module_def); }
