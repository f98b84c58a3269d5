"""Cross-cutting: the import without the extension, `python -m pyops`, README vs CI."""

import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_import_without_extension():
    proc = run_python(
        """
        import sys, warnings
        sys.modules["pyops._C"] = None  # makes `from pyops import _C` raise ImportError
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import pyops
        assert any("did not load" in str(w.message) for w in caught), [str(w.message) for w in caught]
        assert isinstance(pyops.extension_error, ImportError)
        import torch
        x, c = torch.randn(1, 2, 4, 4), torch.rand(1, 3, 2)
        out = pyops.point_sample(x, c, backend="reference")
        assert out.shape == (1, 2, 3)
        for backend in (None, "cpu"):
            try:
                pyops.point_sample(x, c, backend=backend)
            except pyops.ExtensionUnavailableError as e:
                assert "pip install --no-build-isolation" in str(e) and "backend='triton' or 'reference'" in str(e), e
            else:
                raise AssertionError("no error without the extension")
        print("OK")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def test_main_reports_build_and_checks():
    proc = subprocess.run([sys.executable, "-m", "pyops"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "torch" in proc.stdout and "compiled kernels" in proc.stdout
    assert re.search(r"point_sample\s+cpu\s+cpu\s+\S+\s+\S+\s+\S+\s+\S+\s+ok", proc.stdout), proc.stdout
    assert " 0 failed" in proc.stdout


def test_main_exits_nonzero_on_a_failed_check():
    proc = run_python(
        """
        import sys, torch
        from pyops import _selfcheck
        _selfcheck.CHECKS[:] = [_selfcheck.OpCheck(
            name="broken",
            make_inputs=lambda device, dtype, gen: (torch.randn(3, generator=gen, dtype=dtype).to(device),),
            run=lambda x, backend: x * 2,
            reference=lambda x: x,
        )]
        from pyops.__main__ import main
        sys.exit(main())
        """
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED: differs from the reference" in proc.stdout


def readme_commands() -> list[str]:
    """Command lines of the README's install-and-test block (```bash block after '## Install')."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Install.*?```bash\n(.*?)```", readme, re.S)
    assert block, "README.md has no ```bash block under '## Install'"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert "pip install" in commands[0] and commands[0].endswith("python -m pyops")
    assert commands[1] == "pytest"
    for command in commands:
        assert command in ci, f".ci/run does not run the README command {command!r}"


def test_sdist_carries_every_source_and_header(tmp_path):
    """`pip install` of a published sdist compiles csrc/: every file there (headers included) must ship.
    Built from a fresh copy of the tracked files, so no egg-info of an earlier build fills the gaps."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    src = tmp_path / "src"
    for f in tracked:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--formats=gztar", "--dist-dir", str(tmp_path)],
        cwd=src, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (archive,) = tmp_path.glob("pyops-*.tar.gz")
    with tarfile.open(archive) as tar:
        shipped = {Path(*Path(n).parts[1:]).as_posix() for n in tar.getnames()}
    wanted = {f for f in tracked if f.startswith(("csrc/", "pyops/", "kernels/")) and f.endswith((".h", ".cuh", ".cpp", ".cu", ".py"))}
    assert wanted - shipped == set()
    assert {"setup.py", "pyproject.toml", "README.md"} <= shipped


def test_one_version_source():
    import importlib.metadata

    import pyops

    assert pyops.__version__ == importlib.metadata.version("pyops")
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()
