"""Where the time of one SAConv2d call goes: for each of the spec's shapes (bf16 channels_last on
a GPU; a small float32 case with --device cpu), the eager module, the two cuDNN convolutions and
pyops' CUDA composition, forward and forward+backward, under torch.profiler.

Per call it prints the wall time (CUDA synchronised), the host time the calls took to issue, the
number of device kernels and their summed device time, then the kernels that took the most device
time. Wall time far above the kernel time means the layer is launch-bound (host overhead); wall
time close to it means the kernels themselves are the cost.

    python scripts/profile_sac.py            # GPU, run by scripts/gpu_check.sh with PROFILE=1
    python scripts/profile_sac.py --device cpu
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import pyops
from pyops import reference
from pyops.sac import random_parameters

GPU_SHAPES = [(8, 256, 64, 64), (8, 512, 32, 32), (2, 256, 200, 200)]
CPU_SHAPES = [(2, 32, 32, 32)]
CALLS = 5  # profiled calls per entry


def impls(device: str):
    backend = "cuda" if device == "cuda" else "cpu"
    return [
        ("eager SAConv2d", lambda x, p: reference.sac_conv2d(x, *p, 1, 1, 1, 1), None),
        ("two convolutions", lambda x, p: reference.two_convolutions(x, p[0], 1, 1, 1, 1), 2),
        (f"pyops-{backend}-composition", lambda x, p: pyops.sac_conv2d(x, *p, 1, 1, 1, 1, backend=backend), None),
    ]


def run_case(device: str, dtype: torch.dtype, shape, top: int) -> None:
    N, C, H, W = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, H, W, generator=gen).to(device=device, dtype=dtype, memory_format=torch.channels_last)
    params = random_parameters(C, C, 3, 1, True, dtype=dtype, device=device, generator=gen)
    g = torch.randn(N, C, H, W, generator=gen).to(device=device, dtype=dtype, memory_format=torch.channels_last)
    leaves = [x.requires_grad_(), *[p.requires_grad_() for p in params]]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    for name, fn, outputs in impls(device):
        for pass_ in ("fwd", "fwd+bwd"):
            def call():
                if pass_ == "fwd":
                    with torch.no_grad():
                        return fn(x, params)
                out = fn(x, params)
                if outputs:  # the two convolutions: gradients to x and the weight
                    return torch.autograd.grad(out, leaves[:2], (g,) * outputs)
                return torch.autograd.grad(out, leaves, g)

            for _ in range(3):
                call()
            sync()
            start = time.perf_counter()
            for _ in range(CALLS):
                call()
                sync()
            wall = (time.perf_counter() - start) / CALLS * 1e3
            with profile(activities=activities) as prof:
                for _ in range(CALLS):
                    call()
                sync()
            start = time.perf_counter()
            for _ in range(CALLS):
                call()
            host = (time.perf_counter() - start) / CALLS * 1e3  # issue time, before the final sync
            sync()
            kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
            launches = sum(e.count for e in kernels) / CALLS
            device_ms = sum(e.self_device_time_total for e in kernels) / CALLS / 1e3
            aten = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")) / CALLS
            print(f"N{N} C{C} {H}x{W} {pass_:7s} {name:26s} wall {wall:7.3f} ms  host {host:7.3f} ms  "
                  f"kernels {launches:5.1f} ({device_ms:6.3f} ms)  aten calls {aten:6.1f}")
            for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:top]:
                print(f"      {e.self_device_time_total / CALLS / 1e3:7.3f} ms  x{e.count / CALLS:4.1f}  {e.key[:100]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--top", type=int, default=6, help="kernels listed per entry")
    args = parser.parse_args()
    if args.device == "cuda":
        print(torch.cuda.get_device_name(), "torch", torch.__version__)
        for shape in GPU_SHAPES:
            run_case("cuda", torch.bfloat16, shape, args.top)
    else:
        for shape in CPU_SHAPES:
            run_case("cpu", torch.float32, shape, 0)


if __name__ == "__main__":
    main()
