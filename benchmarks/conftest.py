"""Benchmark plumbing: the timers, machine info in the JSON, the `large` marker and the summary table.

Each case is a pytest-benchmark *group*; every entry in it records ``extra_info`` impl, role,
device, the timer, and the case's work (bytes, FLOPs, math: ``common.work``, stated beside each
case). The summary printed at the end (summarize.py) shows each impl's median, its speed relative
to the reference and to the fastest alternative, and on a known card the floor and the fraction
of it reached.

Timers (after one warm-up call: compilation, autotuning, the allocator):
- CUDA: CUDA events around a batch of ``calls`` calls with no synchronisation inside. Before each
  batch a 256 MB write evicts the inputs from L2 and the device is synchronised, so neither the
  host nor the GPU carries work into the batch; ``calls`` is chosen so that a batch lasts about
  BATCH_S (thousands of times the events' ~0.5 µs resolution, and the first launch's latency
  amortised). The entry is the median over the batches, per call. A call whose host side is slower
  than its kernels thus shows its host time, as it would in a training loop.
- CPU: wall clock, one call per round (pytest-benchmark).
Under ``--benchmark-disable`` (CI) every case runs once, untimed, so the benchmarks cannot rot.

Cases marked ``large`` (the realistic CPU sizes of the speed issues, seconds per call) run in timed
runs; the untimed run leaves them out (they would add minutes to CI) unless ``-m`` selects tests
(``-m large`` runs only them, ``-m "large or not large"`` everything).

A SIGTERM (``timeout`` in scripts/gpu_check.sh) ends the run as Ctrl-C does, so the JSON and the
summary of the entries measured so far are still written.
"""

from __future__ import annotations

import math
import signal
import time

import pytest
import torch

BATCH_S = 2e-3  # length of one timed CUDA batch, roughly
MAX_CALLS = 1000  # calls per CUDA batch at most
MAX_ROUNDS = 30  # batches (CUDA) or rounds (CPU) per entry at most
MIN_ROUNDS = 5
BUDGET_S = {"cuda": 0.3, "cpu": 1.0}  # timed seconds per entry, roughly (slow entries get MIN_ROUNDS)
L2_FLUSH_BYTES = 256 << 20  # well above the 50 MB L2 of an H100/H200

_flush: torch.Tensor | None = None


def pytest_configure(config):
    config.addinivalue_line("markers", "large: a realistic CPU size (seconds per call); left out of untimed runs")

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_collection_modifyitems(config, items):
    if not config.getoption("benchmark_disable") or config.getoption("markexpr"):
        return
    large = [item for item in items if item.get_closest_marker("large")]
    if large:
        config.hook.pytest_deselected(items=large)
        items[:] = [item for item in items if not item.get_closest_marker("large")]


def _machine() -> dict:
    import pyops

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return dict(gpu=gpu, torch=torch.__version__, cuda=torch.version.cuda, triton=triton_version, pyops=pyops.__version__)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(_machine())


def _cuda_batches(fn) -> tuple[list[float], int]:
    """Seconds per batch and the calls per batch, timed with CUDA events (see the module docstring)."""
    global _flush
    if _flush is None:
        _flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    once = max(start.elapsed_time(end) * 1e-3, 1e-7)
    calls = max(1, min(MAX_CALLS, math.ceil(BATCH_S / once)))
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(BUDGET_S["cuda"] / (calls * once))))
    events = []
    for _ in range(rounds):
        _flush.zero_()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1e-3 for s, e in events], calls


@pytest.fixture
def measure(benchmark):
    """measure(fn, group=..., impl=..., role=..., device=..., work=common.work(...)): time ``fn``
    as one entry of ``group`` (CUDA events on "cuda", wall clock on "cpu"); run it once when the
    benchmarks are disabled."""

    def run(fn, *, group: str, impl: str, role: str = "pyops", device: str = "cpu", work: dict):
        benchmark.group = group
        benchmark.name = impl
        benchmark.extra_info.update(impl=impl, role=role, device=device, **work)
        if benchmark.disabled:
            benchmark.pedantic(fn)  # one call, untimed
            return
        if device == "cuda":
            # pytest-benchmark times with a host clock; the CUDA-event times go into its statistics
            # through the fixture's own (private, long-stable) hooks
            if not hasattr(benchmark, "_make_stats"):
                raise RuntimeError("benchmarks/conftest.py: this pytest-benchmark has no BenchmarkFixture._make_stats "
                                   "to record CUDA-event timings; use pytest-benchmark 4 or 5")
            benchmark._mode = "CUDA events (benchmarks/conftest.py)"
            times, calls = _cuda_batches(fn)
            benchmark.extra_info.update(timer="cuda-events", calls_per_round=calls)
            stats = benchmark._make_stats(calls)
            for t in times:
                stats.update(t)
            return
        start = time.perf_counter()
        fn()  # warm-up, and the estimate that sets the rounds
        once = time.perf_counter() - start
        rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(BUDGET_S["cpu"] / max(once, 1e-9))))
        benchmark.extra_info.update(timer="wall", calls_per_round=1)
        benchmark.pedantic(fn, warmup_rounds=0, rounds=rounds, iterations=1)

    return run


def pytest_terminal_summary(terminalreporter, config):
    from summarize import card_of, header, rows_of

    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled or not session.benchmarks:
        return
    entries = [
        dict(group=b.group, median=b.stats.median, **{k: b.extra_info.get(k) for k in ("impl", "role", "device", "bytes", "flops", "math")})
        for b in session.benchmarks
        if b.stats is not None
    ]
    machine = _machine()
    tr = terminalreporter
    tr.section("pyops speed (median; ratio = baseline time / this time, >1 is faster)")
    tr.write_line(header(machine))
    group = None
    for r in rows_of(entries, card_of(machine["gpu"])):
        if r["group"] != group:
            tr.write_line(r["group"])
            group = r["group"]
        cells = [f"  {r['impl']:<28} {r['ms']:9.3f} ms"]
        cells += [f"{x:6.2f}x vs {name}" for x, name in ((r["vs_ref"], "reference"), (r["vs_alt"], "best alternative")) if x is not None]
        if r["floor_ms"] is not None:
            cells.append(f"floor {r['floor_ms']:.3f} ms ({100 * r['of_floor']:.0f}% of it)")
        tr.write_line("  ".join(cells))
