"""The static kernel report (scripts/kernel_report.py): its checker on tiny kernels compiled for
sm_90, the report of the current build against the rules, and the committed copy under
benchmarks/results/static/.

The report of the current build is read from ``$PYOPS_KERNEL_REPORT`` (a ``--out`` folder: .ci/run
makes one) or made here once (a few minutes of CPU)."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import triton.language as tl
from triton.runtime.jit import JITFunction

import pyops

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import kernel_report  # noqa: E402

COMMITTED = ROOT / "benchmarks" / "results" / "static" / "kernels.json"
FIGURES = ("regs", "stack", "local_stores", "local_loads", "smem", "fp64", "threads")


# ---- the checker on tiny kernels ----------------------------------------------------------------


# JITFunction directly: under TRITON_INTERPRET=1 @triton.jit would make interpreted ones, and the
# library's tl.sum with them, which the compiler cannot call
def _add(a, b):
    return a + b


_ADD = JITFunction(_add)


def _spill(x, n, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    v = tl.load(x + i, mask=i < n)
    tl.store(x + i, v * tl.reduce(v, 0, _ADD), mask=i < n)  # every value stays live across the sum


def _double(x, n, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    v = tl.load(x + i, mask=i < n)
    tl.store(x + i, (v.to(tl.float64) * 1.1).to(tl.float32), mask=i < n)


def _clean(x, n, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(x + i, tl.load(x + i, mask=i < n) * 2.0, mask=i < n)


def _compile(fn, block, **launch):
    """Compile ``fn`` for sm_90 through the report's own path: a recorded launch, compiled offline."""
    launches = []
    with kernel_report.recording(launches):
        JITFunction(fn)[(1,)](torch.empty(block), block - 3, BLOCK=block, **launch)
    (launch,) = launches
    return kernel_report.compile_launch(*launch)


def _expectations(exceptions=()):
    """Every kernel on a hot path, a target of 1024 threads per SM."""
    return types.SimpleNamespace(
        hot=lambda name, dtype: True, occupancy_target=lambda name: 1024, EXCEPTIONS=list(exceptions),
        exception=lambda name, rule: next((e for e in exceptions if e.rule == rule and e.pattern in name), None),
    )


@pytest.fixture(scope="module")
def tiny_rows():
    return {
        "spill": _compile(_spill, 4096, num_warps=1, maxnreg=32),
        "fp64": _compile(_double, 128),
        "clean": _compile(_clean, 128),
    }


def test_checker_flags_spills_fp64_and_passes_a_clean_kernel(tiny_rows):
    spill, double, clean = tiny_rows["spill"], tiny_rows["fp64"], tiny_rows["clean"]
    assert spill["stack"] > 0 and spill["local_stores"] > 0 and spill["local_loads"] > 0
    assert double["fp64"] > 0 and double["dtype"] == "float32"
    assert clean["stack"] == clean["local_stores"] == clean["fp64"] == 0
    rows = [dict(r) for r in (spill, double, clean)]
    violations, stale = kernel_report.judge(rows, _expectations())
    assert [v.split(":")[0] for v in violations] == ["spill", "fp64"], violations
    assert [r["verdict"] for r in rows] == ["FAIL spill", "FAIL fp64", "ok"]
    assert stale == []


def test_checker_exceptions_accept_and_go_stale(tiny_rows):
    Accepted = kernel_report.expectations.Accepted
    used = Accepted("triton:_spill", "spill", "test", 0)
    unused = Accepted("triton:_clean", "fp64", "test", 0)
    rows = [dict(tiny_rows["spill"]), dict(tiny_rows["clean"])]
    violations, stale = kernel_report.judge(rows, _expectations([used, unused]))
    assert violations == [] and rows[0]["verdict"] == "spill (#0)"
    assert len(stale) == 1 and "_clean" in stale[0]


def test_occupancy_rule():
    # 255 registers: 8 warps per SM; 64 registers: 32 warps; blocks are whole
    assert kernel_report.resident_threads(255, 128) == 256
    assert kernel_report.resident_threads(64, 256) == 1024
    assert kernel_report.resident_threads(65, 1024) == 0
    row = dict(kernel="k", source="triton", variant="", dtype="float32", regs=96, stack=0, local_stores=0,
               local_loads=0, smem=0, fp64=0, threads=128)
    violations, _ = kernel_report.judge([row], _expectations())
    assert row["resident"] == 640 and violations and violations[0].startswith("occupancy")


def test_sass_reading():
    assert all(map(kernel_report.is_fp64, ["DADD", "DFMA.RM", "DSETP.GT.AND", "F2F.F64.F32", "F2I.F64.TRUNC",
                                           "I2F.F64.S64", "MUFU.RCP64H"]))
    assert not any(map(kernel_report.is_fp64, ["DEPBAR.LE", "FADD", "F2F.F16.F32", "I2F.S64", "MUFU.RCP"]))
    assert kernel_report.cuda_dtype("void ns::k<c10::BFloat16, float, 64>(ns::P<float>, c10::BFloat16 const*)") == "bfloat16"
    assert kernel_report.cuda_dtype("void ns::k<double>(double const*)") == "float64"
    assert kernel_report.cuda_dtype("ns::k(long const*, float*)") == "float32"
    assert kernel_report.cuda_dtype("void ns::(anonymous namespace)::k<ns::Op<c10::Half, float> >(long)") == "float16"


# ---- the report of the current build ------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = os.environ.get("PYOPS_KERNEL_REPORT")
    if not folder:
        folder = tmp_path_factory.mktemp("kernel_report")
        env = dict(os.environ, TRITON_INTERPRET="0",
                   PYTHONPATH=os.pathsep.join([str(Path(pyops.__file__).parent.parent), os.environ.get("PYTHONPATH", "")]))
        subprocess.run([sys.executable, str(ROOT / "scripts" / "kernel_report.py"), "--out", str(folder)], env=env,
                       check=True, capture_output=True)
    return json.loads((Path(folder) / "kernels.json").read_text())


def test_current_build_passes_check(report):
    if not report["cuda_build"]:
        pytest.skip("the extension has no sm_90 CUDA code (a build without FORCE_CUDA/nvcc): nothing to hold to the rules")
    assert kernel_report.problems(report) == []


def _figures(report):
    keys = ("source", "kernel", "variant", "dtype", *FIGURES)
    return sorted((*(r[k] for k in keys), tuple(r["cases"])) for r in report["kernels"])


def test_committed_report_is_current(report):
    committed = json.loads(COMMITTED.read_text())
    if not report["cuda_build"]:
        pytest.skip("the extension has no sm_90 CUDA code: the committed report is of a CUDA build")
    if committed["versions"] != report["versions"]:
        pytest.skip(f"tool versions differ from the committed report's: {report['versions']} vs {committed['versions']}")
    old, new = _figures(committed), _figures(report)
    assert old == new, (
        "benchmarks/results/static/kernels.json is out of date; regenerate it with "
        "`python scripts/kernel_report.py --out benchmarks/results/static`:\n"
        + "\n".join(f"- {r}" for r in sorted(set(old) - set(new))[:10])
        + "\n" + "\n".join(f"+ {r}" for r in sorted(set(new) - set(old))[:10])
    )
