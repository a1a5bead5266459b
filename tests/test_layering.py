"""The layering is a test too (docs/architecture.md, "Layers").

Every module of a layer is imported in a fresh interpreter (one per layer) and checked: no layer
below the Ray layer loads `ray` or `mlflow`, and imports point inwards only. Modules are found
by walking the package folders, so a new module is covered the day it is added, and a new
package fails `test_every_package_has_a_layer` until it is given one.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

FRAMEWORKS = ("ray", "mlflow")

# Layer name -> (its packages or modules, the scenimefy packages it must not import).
# `scenimefy.config` is shared by every layer and may be imported anywhere.
PURE = ("scenimefy.models", "scenimefy.losses")
CORE = (
    "scenimefy.data",
    "scenimefy.priors",
    "scenimefy.stages",
    "scenimefy.inference",
    "scenimefy.evaluation",
)
RAY_LAYER = ("scenimefy.distributed", "scenimefy.serve")
FRONT_DOORS = ("scenimefy.commands",)
# The demo package is demo-only code. `scenimefy.demo.run` is the front door of `scenimefy demo`
# and calls the pipeline driver of the Ray layer, but only inside `run_demo`: importing any demo
# module loads neither Ray nor MLflow, which is what this test checks for it.
DEMO = ("scenimefy.demo",)
SHARED = ("scenimefy.config", "scenimefy.configs")

LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pure": (PURE, CORE + RAY_LAYER + FRONT_DOORS + DEMO),
    "core": (CORE + ("scenimefy.config",), RAY_LAYER + FRONT_DOORS + DEMO),
    "demo": (DEMO, ()),
}


def package_dir(package: str) -> Path:
    spec = find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not a package"
    return Path(list(spec.submodule_search_locations)[0])


def walk_modules(name: str) -> list[str]:
    """`name` and, for a package, every module below it (found on disk; nothing is imported)."""
    spec = find_spec(name)
    assert spec is not None, f"{name} not found"
    if not spec.submodule_search_locations:
        return [name]
    found = [name]
    for info in pkgutil.iter_modules([str(package_dir(name))]):
        found += walk_modules(f"{name}.{info.name}") if info.ispkg else [f"{name}.{info.name}"]
    return found


# Runs in the fresh interpreter: import each module in turn and name, for each, the forbidden
# modules that appeared in sys.modules with it (so a violation points at the module that caused it).
CHECK = """
import importlib, json, sys
modules, forbidden = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def loaded():
    return {m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden)}
before, culprits = loaded(), {}
for module in modules:
    importlib.import_module(module)
    now = loaded()
    if now - before:
        culprits[module] = sorted(now - before)
    before = now
print(json.dumps(culprits))
"""


def run_layer(modules: list[str], forbidden: list[str]) -> dict[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(modules), json.dumps(forbidden)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"importing the layer failed:\n{result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_loads_no_framework_and_imports_inwards(layer):
    roots, higher = LAYERS[layer]
    modules = [m for root in roots for m in walk_modules(root)]
    assert len(modules) >= len(roots)
    culprits = run_layer(modules, list(FRAMEWORKS + higher))
    assert not culprits, f"layer {layer!r} imports what it must not (module: what it loaded): {culprits}"


def test_pure_layer_covers_every_model_and_loss_module():
    """The walk finds the modules one would list by hand (guards the discovery itself)."""
    modules = set(walk_modules("scenimefy.models")) | set(walk_modules("scenimefy.losses"))
    expected = {"scenimefy.models.translator", "scenimefy.models.stylegan2", "scenimefy.losses.contrastive"}
    assert expected <= modules


def test_every_package_has_a_layer():
    """A new package under scenimefy/ must be placed in a layer above (and in docs/architecture.md)."""
    placed = {p.split(".")[1] for p in PURE + CORE + RAY_LAYER + FRONT_DOORS + DEMO + SHARED}
    present = {info.name for info in pkgutil.iter_modules([str(package_dir("scenimefy"))])}
    assert present - placed == set(), f"packages without a layer: {sorted(present - placed)}"
