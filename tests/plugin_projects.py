"""Throwaway plugin projects, really built and installed, for end-to-end tests of the plugin host.

A project is written into a temporary folder (``pyproject.toml`` plus modules), installed with
pip into its own ``--target`` folder (never into the running environment), and the CLI runs in a
subprocess with that folder on ``PYTHONPATH``: keras-tlft finds the plugins through their
``keras_tlft`` entry points, exactly as it finds an installed third-party plugin. Deleting the
target folder uninstalls the project.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PY = sys.executable


def install_project(root: Path, dist: str, entry_points: dict[str, str],
                    modules: dict[str, str]) -> Path:
    """Write a plugin distribution ``dist`` under ``root`` and install it; returns the target.

    ``entry_points`` maps plugin names to module paths; ``modules`` maps a package-relative
    module name (``"plugin"`` for ``<package>/plugin.py``) to its source.
    """
    package = dist.replace("-", "_")
    project = root / f"{dist}-src"
    (project / package).mkdir(parents=True)
    (project / package / "__init__.py").write_text("")
    for name, source in modules.items():
        (project / package / f"{name}.py").write_text(textwrap.dedent(source))
    eps = "\n".join(f'{name} = "{package}.{module}"' for name, module in entry_points.items())
    (project / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "{dist}"
        version = "0.0.1"

        [tool.hatch.build.targets.wheel]
        packages = ["{package}"]

        [project.entry-points.keras_tlft]
        """) + eps + "\n")
    return install(project, root / f"{dist}-site")


def install(project: Path, target: Path) -> Path:
    """``pip install --target`` the project folder ``project``; returns ``target``."""
    # Build with the environment's hatchling when it has one (fast, offline); otherwise pip
    # fetches hatchling into an isolated build environment, as for any sdist.
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    proc = subprocess.run(
        [PY, "-m", "pip", "install", "--quiet", "--no-deps", *isolation,
         "--disable-pip-version-check", "--target", str(target), str(project)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return target


def run_cli(targets, *args, env=None, python_code=None):
    """Run ``keras-tlft ARGS`` (or ``python -c CODE``) with ``targets`` on the path."""
    paths = [str(t) for t in targets] + [os.environ.get("PYTHONPATH", "")]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(env or {})}
    for name in ("KERAS_TLFT_STRICT_PLUGINS", "KERAS_TLFT_DISABLE_PLUGINS"):
        if name not in (env or {}):
            full_env.pop(name, None)
    command = [PY, "-c", python_code] if python_code else [PY, "-m", "keras_tlft", *args]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=300)


def run_json(targets, *args, env=None):
    """``run_cli`` for a verb with ``--json``: asserts exit 0 and returns the document."""
    proc = run_cli(targets, *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
