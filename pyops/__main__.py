"""``python -m pyops``: print the build, check every op against its reference, exit non-zero
if any check fails."""

import os
import sys

import torch


def main() -> int:
    # Without a GPU, run the Triton kernels in the interpreter so they are checked too.
    if not torch.cuda.is_available() and "triton" not in sys.modules:
        os.environ.setdefault("TRITON_INTERPRET", "1")

    from pyops import _selfcheck

    print("pyops build")
    for key, value in _selfcheck.build_info():
        print(f"  {key:<17} {value}")
    print()

    results = _selfcheck.run()
    header = f"{'op':<20} {'device':<7} {'backend':<10} {'max error':>10} {'ms':>9} {'ref ms':>9} {'vs ref':>7}  status"
    print(header)
    print("-" * len(header))
    for r in results:
        err = f"{r.max_error:.2e}" if r.max_error is not None else "-"
        ms = f"{r.ms:.3f}" if r.ms is not None else "-"
        ref_ms = f"{r.ref_ms:.3f}" if r.ref_ms is not None else "-"
        ratio = f"{r.ref_ms / r.ms:.2f}x" if r.ms and r.ref_ms else "-"
        status = "ok" if r.ok else f"FAILED: {r.error}"
        print(f"{r.op:<20} {r.device:<7} {r.backend:<10} {err:>10} {ms:>9} {ref_ms:>9} {ratio:>7}  {status}")
    failed = sum(not r.ok for r in results)
    print()
    print(f"{len(results) - failed} passed, {failed} failed (float32 inputs; outputs and gradients vs the reference in float64; times include the backward)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
