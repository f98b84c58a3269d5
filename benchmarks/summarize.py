"""Ratio and floor table of a benchmark run: ``python benchmarks/summarize.py bench.json [more.json ...]``
prints Markdown; ``--merge OUT.json`` also writes the runs' entries as one pytest-benchmark JSON.

Used by benchmarks/conftest.py for the live summary too. Per entry: its median; the ratio to the
case's reference (role ``"reference"``) and to the fastest alternative a user could run instead
(role ``"alternative"``), each baseline median / this median, so > 1 means faster; and on a known
card the case's floor, max(bytes / HBM bandwidth, FLOPs / peak of its math), with the fraction of
the floor reached (floor / median: 100% is the hardware limit).
"""

from __future__ import annotations

import json
import sys

# Datasheet figures (../shared/GPU.md): HBM bandwidth in bytes/s and dense peak FLOP/s per math.
# The H200's nominal 4.8 TB/s is used, not the 4.3 TB/s its device-to-device copy reached, so
# memory-bound kernels top out near 90% of their floor there.
_HOPPER_PEAKS = {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12, "fp32": 67e12}
CARDS = {
    "H100 SXM": (3.35e12, _HOPPER_PEAKS),
    "H200": (4.8e12, _HOPPER_PEAKS),
}


def card_of(gpu: str | None) -> str | None:
    """The entry of CARDS for a ``torch.cuda.get_device_name()``; None for other cards (no floor)."""
    if not gpu:
        return None
    if "H200" in gpu and "NVL" not in gpu:
        return "H200"
    if "H100" in gpu and "HBM3" in gpu:  # the SXM part reports "NVIDIA H100 80GB HBM3"
        return "H100 SXM"
    return None


def floor_seconds(entry: dict, card: str | None) -> float | None:
    """The case's floor on ``card`` (GPU entries that state their work), else None."""
    if card is None or entry.get("device") != "cuda" or entry.get("bytes") is None:
        return None
    hbm, peaks = CARDS[card]
    return max(entry["bytes"] / hbm, entry["flops"] / peaks[entry["math"]])


def entries_of(benchmarks: list[dict]) -> list[dict]:
    """Flat entries (group, impl, role, device, median seconds, work) of pytest-benchmark JSON rows."""
    out = []
    for b in benchmarks:
        info = b["extra_info"]
        out.append(dict(group=b["group"], impl=info["impl"], role=info["role"], median=b["stats"]["median"],
                        device=info.get("device"), bytes=info.get("bytes"), flops=info.get("flops"), math=info.get("math")))
    return out


def rows_of(entries: list[dict], card: str | None) -> list[dict]:
    """Per entry, sorted by case then median: group, impl, ms, vs_ref, vs_alt, floor_ms, of_floor."""
    groups: dict[str, list[dict]] = {}
    for e in entries:
        groups.setdefault(e["group"], []).append(e)
    rows = []
    for group, items in groups.items():
        ref = next((e["median"] for e in items if e["role"] == "reference"), None)
        alt = min((e["median"] for e in items if e["role"] == "alternative"), default=None)
        for e in sorted(items, key=lambda e: e["median"]):
            floor = floor_seconds(e, card)
            rows.append(dict(
                group=group, impl=e["impl"], ms=e["median"] * 1e3,
                vs_ref=ref / e["median"] if ref is not None else None,
                vs_alt=alt / e["median"] if alt is not None else None,
                floor_ms=floor * 1e3 if floor is not None else None,
                of_floor=floor / e["median"] if floor is not None else None,
            ))
    return rows


def header(machine: dict | None) -> str:
    """One line naming the machine and the figures the floor column uses."""
    machine = machine or {}
    card = card_of(machine.get("gpu"))
    line = (f"GPU: {machine.get('gpu')}; torch {machine.get('torch')}; triton {machine.get('triton')}; "
            f"CUDA {machine.get('cuda')}; pyops {machine.get('pyops')}. ")
    if card is None:
        return line + "Floor: none (no figures for this card; CPU cases never have one)."
    hbm, peaks = CARDS[card]
    return line + (f"Floor = max(bytes / {hbm / 1e12:g} TB/s, FLOPs / peak: bf16/fp16 {peaks['bf16'] / 1e12:g}, "
                   f"tf32 {peaks['tf32'] / 1e12:g}, fp32 {peaks['fp32'] / 1e12:g} TFLOP/s), {card} datasheet; "
                   "of floor = floor / median.")


def markdown(rows: list[dict], machine: dict | None = None) -> str:
    fmt = lambda r: f"{r:.2f}x" if r is not None else "-"  # noqa: E731
    lines = [header(machine), ""]
    lines.append("| case | impl | median ms | vs reference | vs best alternative | floor ms | of floor |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in rows:
        floor = f"{r['floor_ms']:.3f}" if r["floor_ms"] is not None else "-"
        frac = f"{100 * r['of_floor']:.0f}%" if r["of_floor"] is not None else "-"
        lines.append(f"| {r['group']} | {r['impl']} | {r['ms']:.3f} | {fmt(r['vs_ref'])} | {fmt(r['vs_alt'])} | {floor} | {frac} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    merge = None
    if "--merge" in argv:
        i = argv.index("--merge")
        merge = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    runs = [json.load(open(path)) for path in argv]
    data = dict(runs[0], benchmarks=[b for run in runs for b in run["benchmarks"]])
    if merge:
        with open(merge, "w") as f:
            json.dump(data, f, indent=1)
    machine = data.get("machine_info")
    print(markdown(rows_of(entries_of(data["benchmarks"]), card_of((machine or {}).get("gpu"))), machine))


if __name__ == "__main__":
    main(sys.argv[1:])
