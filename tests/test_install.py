"""The README's two installs, in its order, in one clone, with the pip a fresh venv bundles.

Python 3.11's bundled pip (23.2) once fell back to ``setup.py develop`` here, whose editable
install did not map ``pipelines/`` onto ``alexnet_tf.pipelines``: every built-in recipe was gone
after the README's test command (issue 22). This test repeats the user's path on a copy of the
working tree: ``pip install ".[cpu]"``, then ``pip install -e ".[cpu,test]"``, then the regular
install once more over the editable one, and after each asks a fresh interpreter, outside the
clone, for the built-in recipes.

The new venv sees this environment's already-installed dependencies (TensorFlow and the rest)
through a ``.pth`` file, so pip resolves them as present instead of downloading ~600 MB; only
alexnet-tf itself (and its build backend, in pip's isolated build environment) is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What the new venv must bring itself: the project under test and the installers.
_NOT_SHARED = ("alexnet_tf", "alexnet-tf", "__editable__", "pip", "setuptools", "wheel", "_distutils_hack")


def _copy_working_tree(destination: Path) -> None:
    """Copies the files git would put in a clone (tracked, plus new files not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _shared_dependencies(folder: Path) -> Path:
    """A folder of links to this environment's installed packages, less the project and pip."""
    folder.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(_NOT_SHARED) and not entry.name.endswith(".pth"):
            (folder / entry.name).symlink_to(entry)
    return folder


def _recipes_seen_by(python: Path, cwd: Path) -> str:
    """Where a fresh interpreter imports alexnet_tf from, after loading every built-in recipe."""
    probe = (
        "import alexnet_tf, alexnet_tf.recipe as r\n"
        "names = sorted(r.builtin_recipes())\n"
        "assert names == ['demo', 'finetune', 'paper'], names\n"
        "for name in names: r.load_recipe(name)\n"
        "from importlib.resources import files\n"  # package data: import-weights' ILSVRC-2012 class list
        "assert files('alexnet_tf.pretrained').joinpath('ilsvrc2012_synsets.txt').is_file()\n"
        "print(alexnet_tf.__file__)\n"
    )
    result = subprocess.run([python, "-c", probe], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.mark.slow
def test_readme_installs_in_order_in_one_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    _copy_working_tree(clone)
    subprocess.run([sys.executable, "-m", "venv", ".venv"], cwd=clone, check=True)
    venv_python = clone / ".venv" / "bin" / "python"
    site = subprocess.run(
        [venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "shared-dependencies.pth").write_text(f"{_shared_dependencies(tmp_path / 'deps')}\n")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)

    def pip_install(*args: str) -> None:
        result = subprocess.run(
            [venv_python, "-m", "pip", "install", "--quiet", *args], cwd=clone, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-3000:]

    outside = tmp_path  # not the clone: its alexnet_tf/ must not be found through the cwd
    installed = Path(site) / "alexnet_tf"

    pip_install(".[cpu]")  # the README's set-up command
    assert Path(_recipes_seen_by(venv_python, outside)).parent == installed

    pip_install("-e", ".[cpu,test]")  # the README's test command, in the same clone and venv
    assert Path(_recipes_seen_by(venv_python, outside)).parent == clone / "alexnet_tf"

    pip_install(".[cpu]")  # and back: a regular install over the editable one
    assert Path(_recipes_seen_by(venv_python, outside)).parent == installed
