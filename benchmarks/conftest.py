"""Benchmark plumbing: timing of CUDA work, machine info in the JSON, and a ratio table.

Each case is a pytest-benchmark *group*; every entry in it records ``extra_info["impl"]`` and
``["role"]``. The summary printed at the end (summarize.py) shows each impl's median and its
speed relative to the reference and to the alternative users have today.
"""

from __future__ import annotations

import time

import pytest
import torch

ROUND_BUDGET_S = 1.0  # timed seconds per entry, roughly (a slow baseline gets fewer rounds)


def pytest_benchmark_update_machine_info(config, machine_info):
    import pyops

    machine_info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    machine_info["torch"] = torch.__version__
    machine_info["cuda"] = torch.version.cuda
    try:
        import triton

        machine_info["triton"] = triton.__version__
    except ImportError:
        machine_info["triton"] = None
    machine_info["pyops"] = pyops.__version__


@pytest.fixture
def measure(benchmark):
    """measure(fn, group=..., impl=..., role=...): time ``fn`` (CUDA work synchronized inside
    the timed call), after warm-up, as one entry of ``group``."""

    def run(fn, *, group: str, impl: str, role: str = "pyops", device: str = "cpu"):
        def timed():
            fn()
            if device == "cuda":
                torch.cuda.synchronize()

        benchmark.group = group
        benchmark.name = impl
        benchmark.extra_info.update(impl=impl, role=role, device=device)
        # warm-up (compilation, allocator, autotuning), then about ROUND_BUDGET_S of timed calls:
        # 25 rounds on the GPU, fewer for slow baselines, at least 5
        for _ in range(2):
            timed()
        start = time.perf_counter()
        timed()
        once = time.perf_counter() - start
        rounds = 25 if device == "cuda" else 5
        rounds = max(5, min(rounds, int(ROUND_BUDGET_S / max(once, 1e-9))))
        benchmark.pedantic(timed, warmup_rounds=0, rounds=rounds, iterations=1)

    return run


def pytest_terminal_summary(terminalreporter, config):
    from summarize import ratio_rows

    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled or not session.benchmarks:
        return
    entries = [
        dict(group=b.group, impl=b.extra_info["impl"], role=b.extra_info["role"], median=b.stats.median)
        for b in session.benchmarks
        if b.stats is not None
    ]
    tr = terminalreporter
    tr.section("pyops speed (median; ratio = baseline time / this time, >1 is faster)")
    group = None
    for g, impl, ms, vs_ref, vs_alt in ratio_rows(entries):
        if g != group:
            tr.write_line(g)
            group = g
        cells = [f"  {impl:<24} {ms:9.3f} ms"]
        cells += [f"{r:6.2f}x vs {name}" for r, name in ((vs_ref, "reference"), (vs_alt, "alternative")) if r is not None]
        tr.write_line("  ".join(cells))
