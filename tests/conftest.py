import os

import torch

# Without a GPU, Triton kernels run in the interpreter on CPU tensors. Triton reads this when
# kernels are defined, so it must be set before pyops.kernels (and triton) are imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# JAX (tests/test_jax.py, tests/test_interop.py) would reserve most of the GPU's memory at its
# first GPU array; allocate on demand instead so the torch GPU tests in the same run keep theirs.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# The references run in float32 and float64: on the GPU, keep cuBLAS/cuDNN from rounding float32
# through TF32, and make cuDNN's algorithm choice deterministic (gradcheck reruns the backward and
# wants the same bits; the tests compare pyops' deterministic kernels run against run).
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.deterministic = True
torch.backends.cudnn.benchmark = False
