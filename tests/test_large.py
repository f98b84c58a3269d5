"""64-bit indexing (issue #20): inputs just past 2^31 elements (uint8/float16, a few GB), marked
``large`` and deselected unless ``-m large`` selects them."""

from __future__ import annotations

import pytest
import torch

import pyops
from pyops import reference as ref

pytestmark = pytest.mark.large
SIDE = 46341  # SIDE**2 = 2_147_488_281 > 2**31


def test_point_sample_uint8_past_2_31():
    x = torch.zeros(1, 1, SIDE, SIDE, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(SIDE - 3, SIDE, (16,), generator=g)
    cols = torch.randint(0, SIDE, (16,), generator=g)
    x[0, 0, rows, cols] = torch.randint(1, 255, (16,), generator=g, dtype=torch.uint8)
    # points at the centres of the last rows' pixels: exact reads of elements past 2^31
    coords = torch.stack([(cols + 0.5) / SIDE, (rows + 0.5) / SIDE], dim=-1).double().unsqueeze(0)
    got = pyops.point_sample(x, coords, backend="cpu")
    want = x[0, 0, rows, cols].float().view(1, 1, -1)
    # coordinate math is float32 for masks: at 46k pixels a coordinate is good to ~SIDE * 2^-24 px
    torch.testing.assert_close(got, want, atol=255 * SIDE * 2.0**-22, rtol=0)


def test_linformer_project_float16_past_2_31():
    n, d = 2**21 + 1, 1024  # x has 2^31 + 1024 elements (4 GB in float16)
    x = torch.empty(1, 1, n, d, dtype=torch.float16)
    x[..., :-8, :].zero_()
    x[..., -8:, :] = torch.randn(8, d, dtype=torch.float16)
    E = torch.zeros(n, 2, dtype=torch.float16)
    E[-8:] = torch.randn(8, 2, dtype=torch.float16)
    got = pyops.linformer_project(x, E, backend="cpu")
    want = ref.linformer_project(x[..., -8:, :], E[-8:])
    torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)
