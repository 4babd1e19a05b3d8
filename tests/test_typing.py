"""The public API is visible to type checkers: `bitscout.search` has its signature, not Any."""

import ast
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import bitscout

ROOT = Path(__file__).resolve().parents[1]
INIT = ROOT / "src" / "bitscout" / "__init__.py"


def _type_checking_imports() -> dict[str, str]:
    """name -> module of each `from M import N as N` under `if TYPE_CHECKING:` in __init__.py."""
    tree = ast.parse(INIT.read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"):
            continue
        for stmt in node.body:
            assert isinstance(stmt, ast.ImportFrom), ast.unparse(stmt)
            for alias in stmt.names:
                # `import N as N` is what marks a re-export for mypy and pyright
                assert alias.asname == alias.name, ast.unparse(stmt)
                found[alias.name] = stmt.module or ""
    return found


def test_every_public_name_is_imported_for_type_checkers():
    assert _type_checking_imports() == bitscout._PUBLIC


def test_type_checking_imports_name_the_objects_the_lazy_lookup_returns():
    for name, module in _type_checking_imports().items():
        assert getattr(importlib.import_module(module), name) is getattr(bitscout, name)


def _mypy(program: str) -> subprocess.CompletedProcess[str]:
    """mypy on `program`, from the repository root so the project's [tool.mypy] applies."""
    return subprocess.run([sys.executable, "-m", "mypy", "-c", program], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_sees_every_public_signature():
    program = "import bitscout\n" + "".join(
        f"reveal_type(bitscout.{name})\n" for name in bitscout.__all__
    )
    done = _mypy(program)
    assert done.returncode == 0, done.stdout + done.stderr
    revealed = [line for line in done.stdout.splitlines() if "Revealed type is" in line]
    assert len(revealed) == len(bitscout.__all__), done.stdout
    by_name = dict(zip(bitscout.__all__, revealed, strict=True))
    assert not [name for name, line in by_name.items() if line.endswith('"Any"')]
    search = by_name["search"]
    assert "def (model: torch.nn.modules.module.Module" in search
    assert search.endswith('.SearchResult"')  # wherever SearchResult is defined


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_checks_calls_against_the_public_signatures():
    program = (
        "import bitscout\n"
        "bitscout.Integer(8, rounding='half_even')\n"  # fine
        "bitscout.Integer('8')\n"  # line 3: a str width
        "bitscout.TrainOptions(epochs=1.5)\n"  # line 4: a float epoch count
    )
    done = _mypy(program)
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert [e.split(":")[1] for e in errors] == ["3", "4"], done.stdout
    assert all("[arg-type]" in e for e in errors), done.stdout


def test_wheel_ships_the_py_typed_marker(tmp_path):
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    build = "from setuptools import build_meta; print(build_meta.build_wheel('dist'))"
    done = subprocess.run(
        [sys.executable, "-c", build], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    wheel = tmp_path / "dist" / done.stdout.split()[-1]
    assert "bitscout/py.typed" in zipfile.ZipFile(wheel).namelist()
