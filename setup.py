"""Builds pyops._C: the C++ CPU kernels always, the CUDA kernels when a CUDA toolkit is found
(or FORCE_CUDA=1). When jax is importable at build time it also builds pyops._jax_ffi, the
XLA FFI handlers of pyops.jax (plain C++/CUDA on the same kernels, no libtorch; CUDA handlers
when the CUDA sources are built); without jax that module is skipped. Environment:

    FORCE_CUDA=1            compile the CUDA sources even when no GPU is visible
    TORCH_CUDA_ARCH_LIST    GPUs to compile for (default without a visible GPU: 8.0;9.0+PTX)
    MAX_JOBS                parallel compile jobs (ninja)

Install with ``pip install --no-build-isolation -e .`` so the extension builds against the
torch already installed.
"""

import glob
import os
import sysconfig
from pathlib import Path

from setuptools import setup

# torch locates the toolkit from the nvcc on PATH; a wrapper script outside the toolkit
# (as on our CI machines) would make it look in the wrong place, so name the usual one.
if "CUDA_HOME" not in os.environ and Path("/usr/local/cuda/bin/nvcc").exists():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = Path(__file__).parent
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def cuda_wanted() -> bool:
    import torch

    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return CUDA_HOME is not None and torch.version.cuda is not None


def nvidia_include_dirs() -> list[str]:
    """Headers torch's own headers need (cusparse.h, ...) when the toolkit lacks them: they ship
    in torch's nvidia wheels under site-packages/nvidia/cu*/include."""
    if CUDA_HOME and Path(CUDA_HOME, "include", "cusparse.h").exists():
        return []
    site = Path(sysconfig.get_paths()["purelib"])
    return sorted(str(p) for p in site.glob("nvidia/cu*/include") if p.is_dir())


def torch_sources(pattern: str) -> list[str]:
    """Sources of pyops._C: everything under csrc/ but the JAX binding (csrc/jax/)."""
    return sorted(p for p in glob.glob(f"csrc/**/{pattern}", recursive=True) if not p.startswith("csrc/jax/"))


def extension():
    sources = torch_sources("*.cpp")
    cxx = ["-O3", "-fopenmp"]
    kwargs = dict(extra_link_args=["-fopenmp"])
    # py_limited_api: the module uses only the stable Python C API and does not link
    # libtorch_python, so one build serves every Python >= 3.10 and C++ programs can load it.
    kwargs["py_limited_api"] = True
    if not cuda_wanted():
        return CppExtension("pyops._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)

    import torch

    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
    sources += torch_sources("*.cu")
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo", "-DPYOPS_WITH_CUDA"]
    return CUDAExtension(
        "pyops._C",
        sources,
        include_dirs=nvidia_include_dirs(),
        extra_compile_args={"cxx": cxx + ["-DPYOPS_WITH_CUDA"], "nvcc": nvcc},
        **kwargs,
    )


def jax_include_dir() -> str | None:
    """The XLA FFI headers of the installed jax, or None when jax is not importable."""
    try:
        import jax.ffi
    except Exception:  # no jax (or a broken one): build pyops without the JAX binding
        return None
    return jax.ffi.include_dir()


def jax_extension():
    """pyops._jax_ffi: XLA FFI handlers on the kernels' shared headers; links no libtorch (CUDA:
    the static CUDA runtime only). Built only when jax is installed at build time."""
    include = jax_include_dir()
    if include is None:
        print("pyops: jax is not installed; skipping the JAX binding (pyops._jax_ffi)")
        return None
    from setuptools import Extension

    sources = ["csrc/jax/module.cpp", "csrc/jax/jax_cpu.cpp"]
    cxx = ["-O3", "-std=c++17", "-fvisibility=hidden"]
    kwargs = dict(include_dirs=[include], py_limited_api=True)
    if not cuda_wanted():
        return Extension("pyops._jax_ffi", sources, extra_compile_args={"cxx": cxx}, **kwargs)
    sources.append("csrc/jax/jax_cuda.cu")
    nvcc = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo", "-DPYOPS_WITH_CUDA"]
    return Extension(
        "pyops._jax_ffi",
        sources,
        extra_compile_args={"cxx": cxx + ["-DPYOPS_WITH_CUDA"], "nvcc": nvcc},
        include_dirs=kwargs["include_dirs"] + [str(Path(CUDA_HOME, "include"))],
        library_dirs=[str(Path(CUDA_HOME, "lib64"))],
        libraries=["cudart_static", "dl", "rt", "pthread"],
        py_limited_api=True,
    )


setup(
    ext_modules=[e for e in (extension(), jax_extension()) if e is not None],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
