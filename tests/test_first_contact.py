"""Nothing written where it should not be: what the tools create inside a git clone stays out of `git status`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scenimefy.demo.run import make_output_dir

REPO = Path(__file__).resolve().parents[1]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=True).stdout


@needs_git
def test_the_demo_folder_is_ignored_inside_any_clone(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    _git(clone, "init", "-q")
    out = make_output_dir(clone / "scenimefy-demo")
    (out / "runs" / "r").mkdir(parents=True)
    (out / "runs" / "r" / "generator.pt").write_bytes(b"x")
    (out / "before_after.png").write_bytes(b"x")
    assert _git(clone, "status", "--porcelain", "--untracked-files=all") == ""


def test_an_existing_folder_is_used_as_it_is(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    assert make_output_dir(tmp_path / "mine") == tmp_path / "mine"
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


@needs_git
def test_this_repository_ignores_what_its_commands_write_by_default(tmp_path):
    """The demo's default folder, run folders and MLflow stores, made inside a copy of this repository's .gitignore."""
    clone = tmp_path / "clone"
    clone.mkdir()
    _git(clone, "init", "-q")
    shutil.copy(REPO / ".gitignore", clone / ".gitignore")
    for path in ("scenimefy-demo/data/a.png", "runs/r/mlflow.db", "runs/r/mlartifacts/1/a", "mlruns/0/meta.yaml"):
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        (clone / path).write_bytes(b"x")
    assert _git(clone, "status", "--porcelain", "--untracked-files=all") == "?? .gitignore\n"
