"""Static report of every GPU kernel pyops ships, for sm_90 (H100/H200), made without a GPU.

* CUDA: every kernel of the built extension's sm_90 code (``pyops/_C*.so``), read with the
  ``cuobjdump`` that ships in the triton wheel.
* Triton: every ``@triton.jit`` kernel of ``kernels/``, compiled offline for sm_90 exactly as the
  host glue would launch it: the benchmark cases (``benchmarks/bench_*.py``) run through the
  public API with ``backend="triton"`` on CPU tensors while ``JITFunction.run`` is replaced by a
  recorder, so each launch's signature, constexprs, num_warps and dtypes are captured and nothing
  runs; each distinct launch is then compiled with ``triton.compile(ASTSource(...),
  target=GPUTarget("cuda", 90, 32))``.

Per kernel: registers, stack frame (bytes), local-memory stores/loads in the SASS (STL/LDL
instructions: spills, or arrays the compiler could not keep in registers), static shared memory,
fp64 instructions in the SASS, threads per block (Triton: num_warps x 32; CUDA: from
``__launch_bounds__`` when the kernel states it), and the threads per SM its registers allow.
The rules and the accepted exceptions are in ``scripts/kernel_expectations.py``.

    python scripts/kernel_report.py [--out DIR] [--check]

prints the Markdown table; ``--out DIR`` writes DIR/kernels.md and DIR/kernels.json; ``--check``
exits 1 when a rule is broken outside the accepted exceptions or an exception matches nothing.
Run it with the pyops of this checkout importable (an installed build or PYTHONPATH).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler.compiler import ASTSource, make_backend
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction, create_function_from_signature

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernel_expectations as expectations  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
TOOLS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
REGS_PER_SM, MAX_THREADS_PER_SM, REG_ALLOC_UNIT = 65536, 2048, 256  # sm_90

# ---- reading sm_90 code -------------------------------------------------------------------------

_OPCODE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")


def is_fp64(opcode: str) -> bool:
    """Whether a SASS opcode is a double-precision instruction (arithmetic, compare, conversion)."""
    base = opcode.split(".")[0]
    if base.startswith("D") and base != "DEPBAR":
        return True
    if base in ("F2F", "F2I", "I2F"):
        return ".F64" in opcode
    return base == "MUFU" and opcode.endswith("64H")


def _cuobjdump(*args: str) -> str:
    return subprocess.run([str(TOOLS / "cuobjdump"), *args], check=True, capture_output=True, text=True).stdout


def read_sm90(path: Path, arch: tuple[str, ...] = ()) -> dict[str, dict]:
    """Mangled name -> figures of every kernel in a cubin, or in an ELF/fatbin with ``arch``."""
    kernels: dict[str, dict] = {}
    for line in _cuobjdump("-res-usage", *arch, str(path)).splitlines():
        if m := re.match(r"\s*Function (\S+):", line):
            name = m.group(1)
        elif m := re.match(r"\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line):
            regs, stack, smem, local = map(int, m.groups())
            kernels[name] = dict(regs=regs, stack=stack + local, smem=smem, local_stores=0, local_loads=0, fp64=0,
                                 threads=None)
    name = None
    for line in _cuobjdump("-sass", *arch, str(path)).splitlines():
        if m := re.match(r"\s*Function : (\S+)", line):
            name = m.group(1)
        elif name in kernels and (m := _OPCODE.search(line)):
            opcode, k = m.group(1), kernels[name]
            k["local_stores"] += opcode.startswith("STL")
            k["local_loads"] += opcode.startswith("LDL")
            k["fp64"] += is_fp64(opcode)
    return kernels


def _launch_bounds(so: Path) -> dict[str, int]:
    """Mangled name -> threads per block stated by __launch_bounds__ (EIATTR_MAX_THREADS/REQNTID)."""
    out, name, attr = {}, None, None
    for line in _cuobjdump("-elf", "-arch", "sm_90", str(so)).splitlines():
        if m := re.match(r"\.nv\.info\.(\S+)$", line):
            name = m.group(1)
        elif m := re.match(r"\s*Attribute:\s*(\S+)", line):
            attr = m.group(1)
        elif attr in ("EIATTR_MAX_THREADS", "EIATTR_REQNTID") and name and (m := re.match(r"\s*Value:\s*(.*)", line)):
            x, y, z = (int(v, 16) for v in m.group(1).split()[:3])
            out[name] = x * y * z
            attr = None
    return out


def _demangle(names: list[str]) -> list[str]:
    return subprocess.run(["c++filt"], input="\n".join(names), check=True, capture_output=True,
                          text=True).stdout.splitlines()


_TYPES = {"float": "float32", "c10::Half": "float16", "c10::BFloat16": "bfloat16", "double": "float64",
          "__half": "float16", "__nv_bfloat16": "bfloat16"}


def cuda_dtype(demangled: str) -> str | None:
    """The element type a CUDA kernel was instantiated for: the first scalar type among its
    template arguments (else its parameters)."""
    demangled = demangled.replace("(anonymous namespace)", "")
    head = demangled.split("(")[0]
    for part in (head[head.find("<"):] if "<" in head else "", demangled[len(head):]):
        found = [(m.start(), _TYPES[m.group(1)]) for m in
                 re.finditer(r"(?<![\w:])(c10::BFloat16|c10::Half|__nv_bfloat16|__half|float|double)(?!\w)", part)]
        if found:
            return min(found)[1]
    return None


def cuda_kernels(so: Path) -> list[dict]:
    """One row per kernel of the extension's sm_90 code (none in a build without CUDA or sm_90)."""
    listing = subprocess.run([str(TOOLS / "cuobjdump"), "-lelf", str(so)], capture_output=True, text=True).stdout
    if ".sm_90." not in listing:
        return []
    kernels = read_sm90(so, ("-arch", "sm_90"))
    threads = _launch_bounds(so)
    names = sorted(kernels)
    rows = []
    for mangled, demangled in zip(names, _demangle(names)):
        row = dict(kernel=demangled, source="cuda", variant="", cases=[], dtype=cuda_dtype(demangled),
                   **kernels[mangled])
        row["threads"] = threads.get(mangled)
        rows.append(row)
    return rows


# ---- Triton: record the glue's launches, compile them offline ------------------------------------

_BACKEND = make_backend(TARGET)
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64"}


@contextlib.contextmanager
def recording(launches: list):
    """Within: every Triton launch appends (JITFunction, signature, constexprs, attrs, options) to
    ``launches`` instead of running; an autotuned launch records every configuration it could pick."""

    def run(fn, *args, grid, warmup, **kwargs):
        kwargs.setdefault("debug", fn.debug)
        binder = create_function_from_signature(fn.signature, fn.params, _BACKEND)
        bound, specialization, options = binder(*args, **kwargs)
        launches.append((fn, *fn._pack_args(_BACKEND, kwargs, bound, specialization, options)[1:],
                         _BACKEND.parse_options(kwargs)))

    def run_tuned(tuner, *args, **kwargs):
        for config in tuner.configs:
            tuner.fn.run(*args, **kwargs, **config.all_kwargs())

    saved = JITFunction.run, Autotuner.run
    JITFunction.run, Autotuner.run = run, run_tuned
    try:
        yield launches
    finally:
        JITFunction.run, Autotuner.run = saved


def compile_launch(fn, signature, constexprs, attrs, options) -> dict:
    """Compile one recorded launch for sm_90 and read its figures from the cubin."""
    kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=TARGET, options=options.__dict__)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        (figures,) = read_sm90(cubin).values()
    figures["smem"] = kernel.metadata.shared
    figures["threads"] = kernel.metadata.num_warps * 32
    pointers = [t[1:] for t in signature.values() if isinstance(t, str) and t[1:] in _DTYPES and t[0] == "*"]
    names = [p.name for p in fn.params]
    # the declared constexprs, then the integer arguments Triton specialised to constants (strides of 1)
    shown = sorted(constexprs.items(), key=lambda item: not fn.params[item[0][0]].is_constexpr)
    variant = " ".join(f"{names[i]}={v}" for (i,), v in shown) + f" warps={kernel.metadata.num_warps}"
    return dict(kernel=fn.__name__, source="triton", variant=variant.strip(),
                dtype=_DTYPES[pointers[0]] if pointers else None, **figures)


def _launch_key(launch) -> str:
    fn, signature, constexprs, attrs, options = launch
    return repr((fn.__module__, fn.__name__, signature, sorted(constexprs.items()), sorted(attrs.items()),
                 sorted(options.__dict__.items())))


def triton_cases():
    """(case, callable): the benchmark cases of benchmarks/bench_*.py on CPU tensors, with
    ``backend="triton"``. Sizes are cut where the CPU would take long (batch, channels of the
    library convolutions, sequence length) only where the compiled code cannot change: same
    dtypes, layouts and constexprs, and every integer argument keeps its class for Triton's
    specialisation (1, a multiple of 16, or neither)."""
    import torch.nn.functional as F

    import pyops
    from pyops.sac import random_parameters

    def grad(out, leaves):
        outs = out if isinstance(out, tuple) else (out,)
        torch.autograd.grad(outs, leaves, [torch.ones_like(o) for o in outs], allow_unused=True)

    def point_sample(layout, coords_grad=False):  # N8 C256 200x336 P12544 fp32, N 8 -> 2
        x = torch.randn(2, 256, 200, 336)
        x = x.to(memory_format=torch.channels_last) if layout == "channels_last" else x
        c = torch.rand(2, 12544, 2, requires_grad=coords_grad)
        leaves = [x.requires_grad_(), c] if coords_grad else [x.requires_grad_()]
        grad(pyops.point_sample(x, c, backend="triton"), leaves)

    def mask2former():  # R1600 128x128 gt512 N12544, R 1600 -> 160
        logits, gt = torch.randn(160, 1, 128, 128), torch.rand(160, 512, 512) > 0.5
        pyops.sample_points_for_loss(logits, gt, 12544, 3.0, 0.75, backend="triton")

    def subdivision():  # R100 7 -> 224 N784
        coarse, fine = torch.randn(100, 1, 7, 7), torch.randn(100, 1, 224, 224)

        def head(coords, indices):
            return F.grid_sample(fine, 2.0 * coords.unsqueeze(2) - 1.0, align_corners=False).squeeze(3)

        pyops.subdivision_inference(coarse, head, num_steps=5, num_points=784, backend="triton")

    def linformer(proj):  # B4 H12 n4096/16384/65536 d64 k256 bf16: n = 4096 (all are multiples of 16)
        q, k, v = (torch.randn(4, 12, 4096, 64, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        E = torch.randn((12, 4096, 256) if proj == "per_head" else (4096, 256), dtype=torch.bfloat16,
                        requires_grad=True)
        grad(pyops.linformer_attention(q, k, v, E, backend="triton"), [q, k, v, E])

    def sac(shape, algorithm, backward):  # bf16 channels_last; fwd+bwd: N -> 2, C -> 32
        N, C, H, W = (2, 32, *shape[2:]) if backward else shape
        x = torch.randn(N, C, H, W, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        params = random_parameters(C, C, 3, 1, True, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0))
        leaves = [x.requires_grad_(backward), *[p.requires_grad_(backward) for p in params]]
        with torch.set_grad_enabled(backward):
            out = pyops.sac_conv2d(x, *params, 1, 1, 1, 1, backend="triton", algorithm=algorithm)
        if backward:
            grad(out, leaves)

    def deform(layer):  # N8 C256 64x64 bf16 channels_last fwd+bwd: N -> 2, C -> 32
        x = torch.randn(2, 32, 64, 64, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        if layer:
            m = pyops.SAConv2d(32, 32, 3, padding=1, use_deform=True, backend="triton").to(torch.bfloat16)
            grad(m(x.requires_grad_()), [x, *m.parameters()])
            return
        offset = torch.randn(2, 18, 64, 64, dtype=torch.bfloat16, requires_grad=True)
        weight = torch.randn(32, 32, 3, 3, dtype=torch.bfloat16, requires_grad=True)
        grad(pyops.deform_conv2d(x.requires_grad_(), offset, weight, None, 1, 1, 1, backend="triton"),
             [x, offset, weight])

    def ada(preset):  # B64 3x256x256 and B16 3x1024x1024 fp32 p=0.6: B16 3x256x256 (same classes)
        x = torch.rand(16, 3, 256, 256) * 2 - 1
        torch.manual_seed(0)
        params = pyops.AugmentPipe.from_preset(preset, p=0.6).sample_params(x)
        grad(pyops.ada.augment(x.requires_grad_(), **params, backend="triton"), [x])

    def ada_color():  # the colour stage alone (not benchmarked)
        x = torch.rand(16, 3, 256, 256) * 2 - 1
        torch.manual_seed(0)
        params = pyops.AugmentPipe.from_preset("color", p=0.6).sample_params(x)
        grad(pyops.ada.augment(x.requires_grad_(), **params, backend="triton"), [x])

    def augment_pipe():  # AugmentPipe(bgcfnc) whole call, B64 3x256x256 -> B16
        torch.manual_seed(0)
        pyops.AugmentPipe.from_preset("bgcfnc", p=0.6, backend="triton")(torch.rand(16, 3, 256, 256) * 2 - 1)

    cases = [(f"point_sample fwd+bwd {layout}", lambda layout=layout: point_sample(layout))
             for layout in ("nchw", "channels_last")]
    cases += [("point_sample grad to coords (not benchmarked)", lambda: point_sample("nchw", True)),
              ("mask2former sampling", mask2former), ("subdivision inference", subdivision)]
    cases += [(f"linformer fwd+bwd E {proj}", lambda proj=proj: linformer(proj)) for proj in ("shared", "per_head")]
    for shape in ((8, 256, 64, 64), (8, 512, 32, 32), (2, 256, 200, 200)):
        size = "N{} C{} {}x{}".format(*shape)
        cases += [(f"sac igemm fwd {size}", lambda s=shape: sac(s, "igemm", False))]
        cases += [(f"sac {a} fwd+bwd {size}", lambda s=shape, a=a: sac(s, a, True)) for a in ("composition", "igemm")]
    cases += [("deform_conv2d fwd+bwd", lambda: deform(False)), ("deformable SAC fwd+bwd", lambda: deform(True))]
    cases += [(f"ada {preset} fwd+bwd", lambda p=preset: ada(p)) for preset in ("bgc", "bgcfnc")]
    cases += [("ada color fwd+bwd (not benchmarked)", ada_color), ("AugmentPipe(bgcfnc) call", augment_pipe)]
    return cases


def triton_kernels() -> list[dict]:
    """One row per distinct compiled launch of the Triton cases (``cases``: which cases launch it)."""
    from pyops import _backend

    launches: dict[str, tuple] = {}
    interpreted, _backend.triton_interpreted = _backend.triton_interpreted, lambda: True  # CPU tensors pass
    try:
        for case, run in triton_cases():
            recorded: list = []
            with recording(recorded):
                run()
            for launch in recorded:
                cases = launches.setdefault(_launch_key(launch), (launch, []))[1]
                if case not in cases:
                    cases.append(case)
    finally:
        _backend.triton_interpreted = interpreted
    return [dict(compile_launch(*launch), cases=cases) for launch, cases in launches.values()]


def all_triton_kernel_names() -> list[str]:
    """Names of the launchable ``@triton.jit`` kernels of kernels/ (helpers start with ``_``)."""
    import importlib
    import pkgutil

    import pyops.kernels

    names = []
    for info in pkgutil.iter_modules(pyops.kernels.__path__):
        module = importlib.import_module(f"pyops.kernels.{info.name}")
        names += [name for name, obj in vars(module).items()
                  if isinstance(obj, JITFunction) and not name.startswith("_") and obj.__module__ == module.__name__]
    return sorted(names)


# ---- rules ------------------------------------------------------------------------------------


def resident_threads(regs: int, threads: int | None) -> int:
    """Threads per SM that ``regs`` registers per thread allow (sm_90: 64K registers, allocated per
    warp in units of 256), in whole blocks of ``threads`` (one warp when unknown)."""
    warp_regs = -(-max(regs, 1) * 32 // REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    block_warps = -(-(threads or 32) // 32)
    blocks = (REGS_PER_SM // warp_regs) // block_warps
    return min(blocks * block_warps * 32, MAX_THREADS_PER_SM)


def judge(rows: list[dict], exp=expectations) -> tuple[list[str], list[str]]:
    """Fill each row's rule fields and verdict; return (violations, stale exceptions): an exception
    is stale when the kernels of its source (``cuda:`` or ``triton:``) are in the report and it
    excuses none of them."""
    used = set()
    violations = []
    for row in rows:
        label = f"{row['source']}:{row['kernel']}"
        row["hot"] = exp.hot(label, row["dtype"])
        row["target"] = exp.occupancy_target(label)
        row["resident"] = resident_threads(row["regs"], row["threads"])
        broken = []
        if row["hot"] and (row["stack"] or row["local_stores"] or row["local_loads"]):
            broken.append("spill")
        if row["dtype"] in ("float32", "float16", "bfloat16") and row["fp64"]:
            broken.append("fp64")
        if row["hot"] and row["resident"] < row["target"]:
            broken.append("occupancy")
        verdict = []
        for rule in broken:
            accepted = exp.exception(label, rule)
            if accepted is None:
                verdict.append(f"FAIL {rule}")
                violations.append(f"{rule}: {label} {row['variant']} ({row['dtype']}): regs {row['regs']}, stack "
                                  f"{row['stack']}, STL/LDL {row['local_stores']}/{row['local_loads']}, fp64 "
                                  f"{row['fp64']}, {row['resident']} threads/SM (target {row['target']})")
            else:
                used.add(accepted)
                verdict.append(f"{rule} (#{accepted.issue})")
        row["verdict"] = ", ".join(verdict) or "ok"
    sources = {row["source"] for row in rows}
    stale = [f"{e.pattern!r} ({e.rule}, #{e.issue}) excuses no kernel" for e in exp.EXCEPTIONS
             if e not in used and e.pattern.split(":")[0] in sources]
    return violations, stale


# ---- output -------------------------------------------------------------------------------------


def versions(so: Path | None) -> dict:
    """The tools whose versions decide the figures (nvcc: the toolkit's, which built the extension here)."""
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = Path(CUDA_HOME or "/nonexistent") / "bin" / "nvcc"
    nvcc = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout if nvcc.exists() else ""
    return dict(triton=triton.__version__, torch=torch.__version__, cuda=torch.version.cuda,
                nvcc=nvcc.strip().splitlines()[-1] if nvcc else None,
                cuobjdump=_cuobjdump("--version").strip().splitlines()[-1], extension=so.name if so else None)


def problems(report: dict) -> list[str]:
    """What ``--check`` fails on: violations, stale exceptions, Triton kernels no case compiles."""
    return (report["violations"] + [f"stale exception: {s}" for s in report["stale_exceptions"]]
            + [f"not compiled by any case: {n}" for n in report["not_compiled"]])


def markdown(report: dict) -> str:
    lines = [
        "# Static kernel report (sm_90)",
        "",
        "`scripts/kernel_report.py` ({} s); {}. {} kernels; rules and exceptions: "
        "`scripts/kernel_expectations.py`.".format(
            report["seconds"], ", ".join(f"{k} {v}" for k, v in report["versions"].items()), len(report["kernels"])),
        "",
        "| kernel | source | dtype | regs | stack | STL/LDL | smem | fp64 | threads/block | threads/SM (target) | "
        "verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["kernels"]:
        name = f"`{r['kernel']}`" + (f" {r['variant']}" if r["variant"] else "")
        source = r["source"] + (" (" + "; ".join(r["cases"]) + ")" if r["cases"] else "") + (" hot" if r["hot"] else "")
        lines.append(f"| {name} | {source} | {r['dtype'] or '-'} | {r['regs']} | {r['stack']} | "
                     f"{r['local_stores']}/{r['local_loads']} | {r['smem']} | {r['fp64']} | {r['threads'] or '?'} | "
                     f"{r['resident']} ({r['target']}) | {r['verdict']} |")
    for title, items in (("Violations", report["violations"]), ("Stale exceptions", report["stale_exceptions"]),
                         ("Triton kernels no case compiles", report["not_compiled"])):
        lines += ["", f"## {title}: {len(items)}", ""] + [f"- {item}" for item in items]
    return "\n".join(lines) + "\n"


def extension_path() -> Path | None:
    import pyops

    found = sorted(Path(pyops.__file__).parent.glob("_C*.so"))
    return found[0] if found else None


def make_report() -> dict:
    t0 = time.perf_counter()
    so = extension_path()
    cuda = cuda_kernels(so) if so else []
    rows = cuda + triton_kernels()
    rows.sort(key=lambda r: (r["source"], r["kernel"], r["variant"]))
    violations, stale = judge(rows)
    compiled = {r["kernel"] for r in rows if r["source"] == "triton"}
    return dict(versions=versions(so), cuda_build=bool(cuda), kernels=rows, violations=violations,
                stale_exceptions=stale, not_compiled=[n for n in all_triton_kernel_names() if n not in compiled],
                seconds=round(time.perf_counter() - t0, 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write DIR/kernels.md and DIR/kernels.json")
    parser.add_argument("--check", action="store_true", help="exit 1 on a violation or a stale exception")
    args = parser.parse_args(argv)
    report = make_report()
    text = markdown(report)
    print(text)
    print(f"report made in {report['seconds']} s")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "kernels.md").write_text(text)
        (args.out / "kernels.json").write_text(json.dumps(report, indent=1) + "\n")
    failures = problems(report)
    if args.check and failures:
        print(f"--check: {len(failures)} problems:\n" + "\n".join(f"  {f}" for f in failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # compiled kernels, not the interpreter's stand-ins: set before pyops.kernels is imported
    os.environ["TRITON_INTERPRET"] = "0"
    sys.exit(main())
