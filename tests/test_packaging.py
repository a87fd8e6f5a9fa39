"""The distributions build cleanly and install as a user installs them.

The wheels are built by ``tools/build_wheels.py`` (what ``make dist`` runs) from clean
copies, and installed in a fresh virtual environment: not editable, no system site
packages, dependencies from the package registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(args: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    # Nothing of the test's own environment leaks in: no PYTHONPATH, no active venv.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=300, check=False, env=env, **kwargs)  # type: ignore[call-overload]


def _data_files(wheel: zipfile.ZipFile, suffix: str) -> set[str]:
    return {n for n in wheel.namelist() if n.endswith(suffix)}


def test_wheels_build_without_warnings_and_install_in_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = _run([sys.executable, ROOT / "tools" / "build_wheels.py", "--strict", "--out",
                  dist, ROOT, ROOT / "plugins" / "home_services"], cwd=tmp_path)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "(0 build warning(s))" in build.stdout, build.stdout
    # The build left nothing in the source tree.
    assert not (ROOT / "build").exists()
    assert not (ROOT / "plugins" / "home_services" / "build").exists()

    core_whl, = dist.glob("thorbis_cache-*.whl")
    hs_whl, = dist.glob("thorbis_home_services-*.whl")
    with zipfile.ZipFile(core_whl) as whl:
        lua_dir, sql_dir = ROOT / "core" / "thorbis_cache" / "lua", ROOT / "sql"
        lua = {f"thorbis_cache/lua/{p.name}" for p in lua_dir.glob("*.lua")}
        sql = {f"thorbis_cache/sql/{p.relative_to(sql_dir)}" for p in sql_dir.rglob("*.sql")}
        assert _data_files(whl, ".lua") == lua
        assert _data_files(whl, ".sql") == sql
        assert "thorbis_cache/py.typed" in whl.namelist()
        metadata_name, = (n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(metadata_name).decode()
        assert "License-Expression: MIT" in metadata
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in whl.namelist())
    with zipfile.ZipFile(hs_whl) as whl:
        assert _data_files(whl, ".sql"), "the plugin's SQL files are not in its wheel"
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in whl.namelist())

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", venv])
    assert made.returncode == 0, made.stderr
    bin_ = venv / "bin"
    install = _run([bin_ / "python", "-m", "pip", "install", "--quiet", core_whl, hs_whl])
    assert install.returncode == 0, install.stdout + install.stderr

    listed = _run([bin_ / "thorbis-cache", "plugins", "--json"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    plugins = json.loads(listed.stdout)["plugins"]
    assert [(p["name"], p["distribution"]) for p in plugins] == [
        ("home_services", "thorbis-home-services")]

    # The package (and its data) comes from the venv's site-packages, not the tree.
    probe = _run([bin_ / "python", "-c",
                  "import thorbis_cache, thorbis_home_services;"
                  "from importlib import resources;"
                  "from thorbis_cache.store.scripts import load_lua;"
                  "print(thorbis_cache.__file__, thorbis_home_services.__file__);"
                  "assert load_lua('lease_fill');"
                  "assert list((resources.files('thorbis_cache.sql') / 'core').iterdir())"],
                 cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert all(p.startswith(str(venv)) for p in probe.stdout.split()), probe.stdout

    check = _run([bin_ / "python", "-m", "pip", "check"])
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_package_of_the_core_is_in_the_wheel() -> None:
    """``packages`` in pyproject.toml is an explicit list: a new subpackage left out of
    it builds a wheel whose ``import thorbis_cache`` fails (the slow wheel test above
    finds that too, this says which one at once)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
                 ["tool"]["setuptools"]["packages"])
    core = ROOT / "core" / "thorbis_cache"
    found = {"thorbis_cache." + ".".join(p.parent.relative_to(core).parts)
             for p in core.rglob("__init__.py") if p.parent != core}
    assert found - listed == set(), "add these to [tool.setuptools] packages"
