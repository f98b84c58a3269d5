"""Ratio table of a benchmark run: ``python benchmarks/summarize.py bench.json [more.json ...]``
prints Markdown; ``--merge OUT.json`` also writes the runs' entries as one pytest-benchmark JSON.

Used by benchmarks/conftest.py for the live summary too. Ratio = baseline median / this median,
so > 1 means faster than the reference (``role`` "reference") or the alternative users run today
(``role`` "alternative").
"""

from __future__ import annotations

import json
import sys


def ratio_rows(entries: list[dict]) -> list[tuple[str, str, float, float | None, float | None]]:
    """entries: dicts with group, impl, role, median (seconds) -> (group, impl, ms, vs ref, vs alt)."""
    groups: dict[str, list[dict]] = {}
    for e in entries:
        groups.setdefault(e["group"], []).append(e)
    rows = []
    for group, items in groups.items():
        base = {e["role"]: e["median"] for e in items}
        for e in sorted(items, key=lambda e: e["median"]):
            ratios = [base[r] / e["median"] if r in base else None for r in ("reference", "alternative")]
            rows.append((group, e["impl"], e["median"] * 1e3, *ratios))
    return rows


def markdown(rows, machine: dict | None = None) -> str:
    lines = []
    if machine:
        lines.append(
            f"GPU: {machine.get('gpu')}; torch {machine.get('torch')}; triton {machine.get('triton')}; "
            f"CUDA {machine.get('cuda')}; pyops {machine.get('pyops')}\n"
        )
    lines.append("| case | impl | median ms | vs reference | vs alternative |")
    lines.append("|---|---|---|---|---|")
    fmt = lambda r: f"{r:.2f}x" if r is not None else "-"  # noqa: E731
    for group, impl, ms, vs_ref, vs_alt in rows:
        lines.append(f"| {group} | {impl} | {ms:.3f} | {fmt(vs_ref)} | {fmt(vs_alt)} |")
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
    entries = [
        dict(group=b["group"], impl=b["extra_info"]["impl"], role=b["extra_info"]["role"], median=b["stats"]["median"])
        for b in data["benchmarks"]
    ]
    print(markdown(ratio_rows(entries), data.get("machine_info")))


if __name__ == "__main__":
    main(sys.argv[1:])
