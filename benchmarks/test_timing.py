"""The benchmark plumbing itself, on the CPU: the CUDA-event timer (with stand-in events), the
floor and ratio columns of the summary."""

import time

import conftest
import pytest
import summarize
import torch
from common import work


class FakeEvent:
    """A CUDA event stand-in that logs where it was recorded and measures wall time."""

    log: list = []

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        self.t = time.perf_counter()
        FakeEvent.log.append(("record", self))

    def synchronize(self):
        FakeEvent.log.append(("sync", self))

    def elapsed_time(self, other):
        return (other.t - self.t) * 1e3


@pytest.fixture
def fake_cuda(monkeypatch):
    FakeEvent.log = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: FakeEvent.log.append(("sync", None)))
    monkeypatch.setattr(conftest, "_flush", torch.empty(1024, dtype=torch.uint8))
    return FakeEvent.log


def test_cuda_batches_time_whole_batches_without_sync(fake_cuda):
    calls_made = []

    def fn():
        calls_made.append(1)
        fake_cuda.append(("call", None))
        time.sleep(2e-4)

    times, calls = conftest._cuda_batches(fn)
    assert 1 < calls <= conftest.MAX_CALLS
    assert conftest.MIN_ROUNDS <= len(times) <= conftest.MAX_ROUNDS
    # events pair up: the calibration call, then each batch: a sync before it, then only its calls
    records = [i for i, (kind, _) in enumerate(fake_cuda) if kind == "record"]
    pairs = list(zip(records[::2], records[1::2]))
    assert len(pairs) == 1 + len(times)
    for start, end in pairs[1:]:
        assert fake_cuda[start - 1][0] == "sync"
        assert [kind for kind, _ in fake_cuda[start + 1 : end]] == ["call"] * calls
    assert len(calls_made) == 2 + calls * len(times)
    # per-batch times cover the batch's calls
    assert min(times) >= calls * 2e-4


def test_slow_call_gets_one_call_per_batch_and_few_rounds(fake_cuda):
    times, calls = conftest._cuda_batches(lambda: time.sleep(0.07))
    assert calls == 1 and len(times) == conftest.MIN_ROUNDS


def test_floor_uses_the_card_and_the_math():
    h200_hbm, h200_peaks = summarize.CARDS["H200"]
    memory_bound = dict(work(4.8e9, 1e9, "fp32"), device="cuda")
    compute_bound = dict(work(1e6, 989e9, "bf16"), device="cuda")
    assert summarize.floor_seconds(memory_bound, "H200") == pytest.approx(4.8e9 / h200_hbm)
    assert summarize.floor_seconds(compute_bound, "H200") == pytest.approx(989e9 / h200_peaks["bf16"])
    assert summarize.floor_seconds(dict(compute_bound, math="fp32"), "H100 SXM") == pytest.approx(989e9 / 67e12)
    assert summarize.floor_seconds(dict(memory_bound, device="cpu"), "H200") is None
    assert summarize.floor_seconds(memory_bound, None) is None


@pytest.mark.parametrize("name,card", [("NVIDIA H200", "H200"), ("NVIDIA H100 80GB HBM3", "H100 SXM"),
                                       ("NVIDIA H100 PCIe", None), ("NVIDIA H200 NVL", None), (None, None)])
def test_card_of(name, card):
    assert summarize.card_of(name) == card


def test_rows_ratio_to_reference_and_fastest_alternative():
    w = work(4.8e9, 0, "fp32")
    entries = [dict(group="g", impl=impl, role=role, median=median, device="cuda", **w)
               for impl, role, median in [("ref", "reference", 8e-3), ("alt-slow", "alternative", 4e-3),
                                          ("alt-fast", "alternative", 2e-3), ("pyops", "pyops", 1e-3)]]
    rows = {r["impl"]: r for r in summarize.rows_of(entries, "H200")}
    assert [r["impl"] for r in summarize.rows_of(entries, "H200")] == ["pyops", "alt-fast", "alt-slow", "ref"]
    assert rows["pyops"]["vs_ref"] == pytest.approx(8.0) and rows["pyops"]["vs_alt"] == pytest.approx(2.0)
    assert rows["alt-slow"]["vs_alt"] == pytest.approx(0.5)
    assert rows["pyops"]["floor_ms"] == pytest.approx(1.0) and rows["pyops"]["of_floor"] == pytest.approx(1.0)
    table = summarize.markdown(summarize.rows_of(entries, None), {"gpu": "NVIDIA A100-SXM4-80GB"})
    assert "| g | pyops | 1.000 | 8.00x | 2.00x | - | - |" in table
    assert "| g | pyops | 1.000 | 8.00x | 2.00x | 1.000 | 100% |" in summarize.markdown(summarize.rows_of(entries, "H200"), {"gpu": "NVIDIA H200"})
