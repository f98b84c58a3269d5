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

# Hypothesis profiles of the property suite (tests/test_properties.py): "ci" is the default
# (derandomized: the same examples every run, few of them, so the file stays well inside CI's
# time under the Triton interpreter); `pytest tests/test_properties.py --hypothesis-profile=long`
# explores further with random examples.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", derandomize=True, max_examples=8, deadline=None, print_blob=True,
                              suppress_health_check=list(HealthCheck))
    settings.register_profile("long", max_examples=300, deadline=None, print_blob=True,
                              suppress_health_check=list(HealthCheck))
    settings.load_profile("ci")  # --hypothesis-profile (hypothesis' pytest plugin) overrides it
except ImportError:  # the property suite is skipped without hypothesis
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "large: past 2^31 elements (GBs of memory, minutes); run with -m large")


def pytest_collection_modifyitems(config, items):
    # tests marked `large` run only when -m selects them (`-m large`), as in benchmarks/conftest.py
    if config.getoption("markexpr"):
        return
    large = [item for item in items if item.get_closest_marker("large")]
    if large:
        config.hook.pytest_deselected(items=large)
        items[:] = [item for item in items if not item.get_closest_marker("large")]
