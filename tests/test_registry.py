"""One schema per op (pyops/_schemas.py) and the Triton kernels without the C++ extension."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import pyops
from pyops import _extension, _registry
from pyops._schemas import SCHEMAS


def test_compiled_schemas_are_the_table():
    # the extension defines exactly the table's ops, with the table's schemas
    assert _extension.available(), _extension.load_error
    assert not _extension._stale_schemas()
    compiled = {op for op in dir(torch.ops.pyops) if isinstance(getattr(torch.ops.pyops, op, None), torch._ops.OpOverloadPacket)}
    assert compiled == set(SCHEMAS)


def test_every_op_has_one_triton_kernel_with_the_same_schema():
    for name, schema in SCHEMAS.items():
        triton_op = getattr(torch.ops.pyops_triton, name).default
        assert str(triton_op._schema) == str(torch._C.parse_schema(f"pyops_triton::{name}{schema}"))
        assert name in _registry.TRITON_IMPLS


def test_unknown_variant_is_a_clear_error():
    op = _registry.Op("point_sample")
    with pytest.raises(RuntimeError, match="already registered"):
        op.register_triton(lambda *a: None)
    with pytest.raises(ValueError, match="unknown backend"):
        pyops.point_sample(torch.randn(1, 1, 2, 2), torch.rand(1, 3, 2), backend="tpu")


WITHOUT_EXTENSION = textwrap.dedent(
    """
    import torch, pyops
    from pyops import _backend, _extension, reference
    assert not _extension.available()
    gen = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen)
    x, c = r(2, 3, 5, 6), torch.rand(2, 7, 2, generator=gen)
    torch.testing.assert_close(pyops.point_sample(x, c, backend="triton"), reference.point_sample(x, c))
    q, k, v, E = r(1, 2, 9, 8), r(1, 2, 9, 8), r(1, 2, 9, 8), r(9, 4) / 3
    torch.testing.assert_close(pyops.linformer_attention(q, k, v, E, backend="triton"),
                               reference.linformer_attention(q, k, v, E), atol=1e-5, rtol=1e-4)
    images, G = torch.rand(2, 3, 8, 8, generator=gen), torch.eye(3).repeat(2, 1, 1)
    G[:, 0, 2] = 0.7
    torch.testing.assert_close(pyops.ada.geometric_color(images, G, backend="triton"),
                               pyops.ada.geometric_color(images, G, backend="reference"), atol=1e-5, rtol=1e-4)
    # CUDA tensors would go to Triton by default; the C++ backends explain why they cannot run
    assert _backend.resolve("point_sample", None, torch.device("cuda")) == "triton"
    try:
        pyops.point_sample(x, c, backend="cpu")
    except pyops.ExtensionUnavailableError as exc:
        assert "PYOPS_EXTENSION=0" in str(exc), exc
    else:
        raise AssertionError("backend='cpu' ran without the extension")
    print("ok")
    """
)


def test_triton_kernels_work_without_the_extension():
    env = dict(os.environ, PYOPS_EXTENSION="0", TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "-c", WITHOUT_EXTENSION], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr
