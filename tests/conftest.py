import os

import torch

# Without a GPU, Triton kernels run in the interpreter on CPU tensors. Triton reads this when
# kernels are defined, so it must be set before pyops.kernels (and triton) are imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# JAX (tests/test_jax.py, tests/test_interop.py) would reserve most of the GPU's memory at its
# first GPU array; allocate on demand instead so the torch GPU tests in the same run keep theirs.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
