import os

import torch

# Without a GPU, Triton kernels run in the interpreter on CPU tensors. Triton reads this when
# kernels are defined, so it must be set before pyops.kernels (and triton) are imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
