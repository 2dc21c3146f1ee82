"""The package's layout: packages by concept, every old import path still the same module, no
import cycle, no module over 400 lines, and no submodule that shadows a public name."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import pytest

import keras_tlft

PACKAGE = Path(keras_tlft.__file__).parent

# keras_tlft/*.py at 68260bb, before the modules moved into packages: each still imports.
OLD_MODULES = (
    "_files", "_keras_compat", "adapters", "assembly", "batching", "batchnorm", "bench", "blocks",
    "cache", "checks", "default_plugins", "discovery", "drift", "early_stopping", "feature_store",
    "fit_checks", "graph", "heads", "history", "hookspecs", "local", "lr_finder", "lr_result",
    "lr_rules", "optim", "plan", "plateau", "plugin_template", "plugins", "preprocessing",
    "preset_backbones", "presets", "recipes", "registry", "report", "schedule", "schedule_input",
    "spec", "staging", "testing", "unfreeze",
)


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout.strip().splitlines()[-1]


# ---------------------------------------------------------------------- old import paths

@pytest.mark.parametrize("name", OLD_MODULES)
def test_every_old_module_path_is_the_module_at_its_new_path(name):
    old = f"keras_tlft.{name}"
    module = importlib.import_module(old)
    new = module.__name__
    assert sys.modules[old] is module and sys.modules[new] is module  # one object per file
    assert importlib.import_module(new) is module
    assert module.__spec__.name == new  # the alias's spec does not replace the module's own
    assert Path(module.__file__) == PACKAGE.joinpath(*new.split(".")[1:]).with_suffix(".py")
    if new != old:  # moved: into a package, not left at the top as a file
        assert len(new.split(".")) == 3 and not (PACKAGE / f"{name}.py").exists()


def test_old_paths_still_give_the_names_they_gave():
    from keras_tlft.schedule import (
        Schedule,
        Stage,
        parse_schedule,
        parse_unfreeze,
        plan_stages,
        plateau,
        two_phase,
    )
    from keras_tlft.schedules import stage

    assert (two_phase, plateau, parse_schedule, plan_stages) == (
        keras_tlft.two_phase, keras_tlft.plateau, keras_tlft.parse_schedule,
        keras_tlft.plan_stages)
    assert Schedule is keras_tlft.Schedule and Stage is stage.Stage
    assert parse_unfreeze is keras_tlft.parse_unfreeze
    assert isinstance(two_phase(), importlib.import_module("keras_tlft.schedule").Schedule)
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        importlib.import_module("keras_tlft.schedule").nosuch  # noqa: B018


def test_patching_an_old_path_patches_the_module_in_use():
    import keras_tlft.callbacks.staging as staging
    import keras_tlft.staging  # noqa: F401

    with mock.patch("keras_tlft.staging.apply_unfreeze") as patched:
        assert staging.apply_unfreeze is patched
    assert staging.apply_unfreeze is not patched


def test_old_paths_import_nothing_heavy():
    code = ("import sys, keras_tlft, keras_tlft.spec, keras_tlft.hookspecs; "
            "from keras_tlft.spec import BackboneSpec; "
            "assert keras_tlft.spec is keras_tlft.backbones.spec; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'pluggy') if m in sys.modules))")
    assert _python(code) == "['pluggy']"  # hookspecs is pluggy's markers


# ---------------------------------------------------------------------- the layout

def test_the_top_level_is_a_few_packages_by_concept():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 13, f"keras_tlft/ has {len(entries)} entries: {entries}"
    names = {p.removesuffix(".py") for p in entries}
    assert not names & set(keras_tlft.__all__), "a module or package is named as a public name"


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imported_at_import_time(tree: ast.Module, module: str, is_package: bool):
    """The keras_tlft modules a module imports as it is imported: not in a function body, not
    under ``if TYPE_CHECKING:``."""
    found = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = module.split(".")[: len(module.split(".")) - node.level + is_package]
                    base = ".".join(parent + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names]
                found.extend(s for s in subs if _is_module(s) or s in _moved().MOVED)
                if not all(_is_module(s) or s in _moved().MOVED for s in subs):
                    found.append(base)
            visit(ast.iter_child_nodes(node))

    visit(tree.body)
    return [m for m in found if m == "keras_tlft" or m.startswith("keras_tlft.")]


def _moved():
    return importlib.import_module("keras_tlft._moved")


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = _imported_at_import_time(tree, name, path.name == "__init__.py")
        graph[name] = {_moved().MOVED.get(t, t) for t in targets} - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_at_import_time():
    graph = import_graph()
    assert "keras_tlft.schedules.plan" in graph["keras_tlft.callbacks.unfreeze"]  # it reads
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The packages in the order data flows (docs/layout.md); the modules at the top are shared helpers.
FLOW = ("backbones", "model", "schedules", "callbacks", "training", "reporting", "cli")
# The plugin author's kit builds a backbone and checks that its rules cut it into blocks.
AGAINST_THE_FLOW = {"keras_tlft.backbones.testing -> keras_tlft.model.blocks"}


def test_nothing_imports_a_later_step_of_the_flow_at_import_time():
    def step(module):
        parts = module.split(".")
        return FLOW.index(parts[1]) if len(parts) > 1 and parts[1] in FLOW else -1

    upstream = sorted(f"{m} -> {t}" for m, targets in import_graph().items() for t in targets
                      if step(m) >= 0 and step(t) > step(m))
    assert set(upstream) <= AGAINST_THE_FLOW, f"imports against the flow {FLOW}: {upstream}"


def test_keras_tlft_imports_its_own_modules_by_their_new_paths():
    old = {(name, t) for name, targets in _raw_imports().items() for t in targets
           if t in _moved().MOVED}
    assert not old, f"keras_tlft imports old paths (see keras_tlft/_moved.py): {sorted(old)}"


def _raw_imports() -> dict[str, set[str]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_moved.py":
            continue
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names  # not a public name
                             if node.module != "keras_tlft" or a.name not in keras_tlft.__all__)
        found[_module_name(path)] = names
    return found


def test_the_plain_data_schedule_does_not_import_its_parser_presets_or_plans():
    """Even inside functions: a Schedule is read and written without schedule_input."""
    imports = _raw_imports()
    for data in ("keras_tlft.schedules.schedule", "keras_tlft.schedules.stage"):
        readers = {t for t in imports[data] if t.split(".")[-1] in
                   ("schedule_input", "presets", "plan", "read_schedule_file", "parse_schedule")}
        assert not readers, f"{data} imports {sorted(readers)}"


# ---------------------------------------------------------------------- shadowed public names

SHADOW_CHECK = """
import importlib, pkgutil, sys, types
import keras_tlft
import keras_tlft.plateau  # the old path of the plateau trigger's module, before tlft.plateau
assert callable(keras_tlft.plateau), keras_tlft.plateau
assert sys.modules["keras_tlft.plateau"] is keras_tlft.callbacks.plateau
for info in pkgutil.walk_packages(keras_tlft.__path__, "keras_tlft."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
from keras_tlft._moved import MOVED
for old in MOVED:
    importlib.import_module(old)
wrong = []
for name in keras_tlft.__all__:
    value = getattr(keras_tlft, name)
    home = keras_tlft._LAZY.get(name)
    if name in keras_tlft._PUBLIC_MODULES:
        expected = importlib.import_module(home)
    elif home:
        expected = getattr(importlib.import_module(home), name)
    else:
        expected = value
    if value is not expected or (isinstance(value, types.ModuleType)
                                 and name not in keras_tlft._PUBLIC_MODULES):
        wrong.append(name)
assert not wrong, wrong
assert keras_tlft.plateau(patience=1) == keras_tlft.Schedule(trigger="plateau", patience=1)
del sys.modules["keras_tlft.plateau"]  # imported again once the public name is cached
importlib.import_module("keras_tlft.plateau")
assert callable(keras_tlft.plateau) and isinstance(keras_tlft.heads, types.ModuleType)
print("OK")
"""


def test_importing_every_submodule_shadows_no_public_name():
    """Issue 23, 2: importing keras_tlft.unfreeze made ``tlft.plateau`` the plateau module."""
    assert _python(SHADOW_CHECK) == "OK"


def test_the_package_keeps_a_public_name_a_module_would_replace():
    saved = keras_tlft.plateau
    keras_tlft.plateau = types.ModuleType("keras_tlft.plateau")  # what import does to a parent
    assert keras_tlft.plateau is saved
    heads = importlib.import_module("keras_tlft.heads")
    assert keras_tlft.heads is heads is importlib.import_module("keras_tlft.model.heads")


def test_every_submodule_is_importable():
    names = [i.name for i in pkgutil.walk_packages(keras_tlft.__path__, "keras_tlft.")
             if not i.name.endswith("__main__")]
    assert {"keras_tlft.backbones.spec", "keras_tlft.callbacks.unfreeze"} <= set(names)
    for name in names:
        importlib.import_module(name)


def test_rewrite_spells_old_import_paths_at_the_new_ones():
    from keras_tlft._moved import rewrite

    old = ("from keras_tlft import fit_checks, plateau\nfrom keras_tlft import plateau\n"
           "from keras_tlft import fit_checks\nimport keras_tlft.schedule\n"
           "    from keras_tlft.schedule_input import parse_schedule\n"
           "from keras_tlft.cli import main\nfrom keras_tlft.scheduler import x\n")
    assert rewrite(old) == (
        "from keras_tlft import fit_checks, plateau\nfrom keras_tlft import plateau\n"
        "from keras_tlft.callbacks import fit_checks\nimport keras_tlft.schedules.schedule\n"
        "    from keras_tlft.schedules.schedule_input import parse_schedule\n"
        "from keras_tlft.cli import main\nfrom keras_tlft.scheduler import x\n")
