"""Build the wheels of the core and of the in-repo plugins, each from a clean copy.

Usage::

    python tools/build_wheels.py [--out DIR] [--strict] [PROJECT ...]

``PROJECT`` is a directory holding a ``pyproject.toml``: ``.`` (the core, the default
with every ``plugins/*`` and ``examples/*``) or e.g. ``plugins/home_services``. Each is
copied to a temporary directory (the files git tracks or would track, so no ``.venv``,
``build/``, ``*.egg-info`` or caches) and built there with ``pip wheel`` under build
isolation: the build leaves nothing in the source tree, and a stale ``build/lib`` can
never slip a deleted file into a wheel. ``--strict`` fails when the build backend
printed a warning (a ``SetuptoolsDeprecationWarning``, a package-data directory absent
from ``packages``, ...).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["ROOT", "backend_warnings", "build_wheel", "main"]

ROOT = Path(__file__).resolve().parent.parent

#: A Python warning as the backend prints it: ``path:line: SomeWarning: message``
#: (setuptools' own ``_Warning`` included); pip's ``WARNING:`` lines are not backend's.
_WARNING = re.compile(r"\b\w*Warning: ")
_NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                     "__pycache__", ".*_cache", ".hypothesis")


def _copy_project(project: Path, dest: Path) -> None:
    """Copy ``project`` to ``dest``: the files git tracks or would track there (new ones
    included, ignored ones not); outside a git work tree, everything but build output."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
        cwd=project, capture_output=True, check=False)
    if listed.returncode != 0:
        shutil.copytree(project, dest, ignore=_NOT_COPIED, dirs_exist_ok=True)
        return
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = project / name
        if source.is_file():  # a tracked file deleted in the work tree is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def backend_warnings(log: str) -> list[str]:
    """The warnings a build backend printed in ``pip wheel -v`` output (one line each)."""
    return [line.strip() for line in log.splitlines() if _WARNING.search(line)]


def build_wheel(project: Path, out: Path) -> tuple[Path, str]:
    """Build ``project``'s wheel into ``out`` from a temporary copy.

    :param project: a directory holding a ``pyproject.toml``.
    :param out: where the wheel is written (created if missing).
    :returns: the wheel's path and pip's verbose output.
    :raises RuntimeError: pip failed (its output included).
    """
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.whl"))
    with tempfile.TemporaryDirectory(prefix="thorbis-build-") as tmp:
        copy = Path(tmp) / project.resolve().name
        copy.mkdir()
        _copy_project(project.resolve(), copy)
        run = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--wheel-dir",
             str(out), str(copy)],
            capture_output=True, text=True, check=False)
    log = run.stdout + run.stderr
    if run.returncode != 0:
        raise RuntimeError(f"pip wheel {project} failed:\n{log}")
    made = set(out.glob("*.whl")) - before
    if len(made) != 1:  # rebuilt in place: the same name as before
        name = re.search(r"filename=(\S+\.whl)", log)
        if name is None:
            raise RuntimeError(f"pip wheel {project}: no wheel named in its output:\n{log}")
        return out / name.group(1), log
    return made.pop(), log


def main(argv: list[str] | None = None) -> int:
    """Build the wheels named on the command line; 1 if ``--strict`` saw a warning."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("projects", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--strict", action="store_true",
                        help="fail when the build backend printed a warning")
    args = parser.parse_args(argv)
    projects: list[Path] = args.projects or [
        ROOT, *sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml")),
        *sorted(p.parent for p in ROOT.glob("examples/*/pyproject.toml"))]
    status = 0
    for project in projects:
        wheel, log = build_wheel(project, args.out)
        warnings = backend_warnings(log)
        print(f"{wheel} ({len(warnings)} build warning(s))")
        for line in warnings:
            print(f"  {line}")
        if warnings and args.strict:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
