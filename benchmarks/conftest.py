"""Benchmark plumbing: timing of CUDA work, machine info in the JSON, and a ratio table.

Each case is a pytest-benchmark *group*; every entry in it records ``extra_info["impl"]``. The
summary printed at the end shows each impl's median and its speed relative to the reference and
to the alternative users have today (``role`` "reference" / "alternative").
"""

from __future__ import annotations

import pytest
import torch


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
        benchmark.pedantic(timed, warmup_rounds=3, rounds=25 if device == "cuda" else 5, iterations=1)

    return run


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled or not session.benchmarks:
        return
    groups: dict[str, list] = {}
    for bench in session.benchmarks:
        if bench.stats is not None:
            groups.setdefault(bench.group, []).append(bench)
    tr = terminalreporter
    tr.section("pyops speed (median; ratio = baseline time / this time, >1 is faster)")
    for group, benches in groups.items():
        by_role = {b.extra_info.get("role"): b.stats.median for b in benches}
        tr.write_line(group)
        for b in sorted(benches, key=lambda b: b.stats.median):
            cells = [f"  {b.extra_info['impl']:<24} {b.stats.median * 1e3:9.3f} ms"]
            for role in ("reference", "alternative"):
                if role in by_role:
                    cells.append(f"{by_role[role] / b.stats.median:6.2f}x vs {role}")
            tr.write_line("  ".join(cells))
