"""The layering is a test too: models, losses and stage loops never import Ray or MLflow."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "scenimefy.models.translator",
        "scenimefy.models.stylegan2",
        "scenimefy.losses",
        "scenimefy.stages.translator",
        "scenimefy.inference.translate",
    ],
)
def test_pure_layers_do_not_load_ray_or_mlflow(module):
    code = f"import sys, {module}; bad = [m for m in ('ray', 'mlflow') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{module} imports {result.stdout.strip()} {result.stderr[-500:]}"
