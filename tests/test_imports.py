"""What importing costs and what it pulls in: the command line's help and the errors found before
any tensor exists load no TensorFlow; prepare-data does not import the network; the constants
several layers share have one definition."""

import os
import subprocess
import sys

import pytest

from alexnet_tf import constants, recipe
from alexnet_tf.input import options
from alexnet_tf.network import layers, model
from alexnet_tf.records import schema
from alexnet_tf.training import distribute

# ``python -c WRAPPER REPORT ARGS`` runs ``python -m alexnet_tf ARGS`` and, at exit (after click's
# SystemExit), writes the heavy modules it imported to the file REPORT.
WRAPPER = """
import atexit, runpy, sys
HEAVY = ("tensorflow", "keras", "numpy", "alexnet_tf.network.model", "alexnet_tf.network.layers", "apache_beam")
REPORT = sys.argv.pop(1)
def report():
    with open(REPORT, "w") as f:
        f.write(" ".join(name for name in HEAVY if name in sys.modules))
atexit.register(report)
sys.argv[0] = "alexnet-tf"
runpy.run_module("alexnet_tf", run_name="__main__", alter_sys=True)
"""

CASES = [
    # (arguments, exit status, a fragment of stderr's last line)
    ("--help", 0, ""),
    ("--version", 0, ""),
    ("fit --help", 0, ""),
    ("predict --help", 0, ""),
    ("prepare-data --help", 0, ""),
    ("fit --data-dir RECORDS --model-dir RUN --set training.nope=1", 1, "training.nope"),
    ("fit --data-dir RECORDS --model-dir RUN --recipe demo --set input.crop_size=32", 1, "input.crop_size=32"),
    ("fit --data-dir RECORDS --model-dir RUN --recipe BAD_RECIPE", 1, "bad.yaml: unknown section 'trainig'"),
    ("fit --data-dir RECORDS --model-dir RUN --pipeline MISSING", 1, "(demo, finetune, paper)"),
    ("fit --data-dir RECORDS --model-dir RUN --epochs many", 2, "--epochs"),
    ("evaluate --data-dir RECORDS RUN --batch-size 0", 2, "--batch-size"),
    ("predict MODEL image.jpg --top-k 0", 2, "--top-k"),
    ("nonsense", 2, "nonsense"),
]


@pytest.mark.slow
@pytest.mark.parametrize("line, status, fragment", CASES, ids=[line for line, _, _ in CASES])
def test_help_and_early_errors_import_no_tensorflow(tmp_path, line, status, fragment):
    """A fresh ``python -m alexnet_tf``: --help and the errors of flags and recipes answer without
    TensorFlow, Keras or numpy (TensorFlow alone took seconds to import)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainig: {epochs: 1}\n")
    places = {"RECORDS": tmp_path / "records", "RUN": tmp_path / "run", "MODEL": tmp_path / "model",
              "BAD_RECIPE": bad, "MISSING": tmp_path / "missing.yaml"}  # fmt: skip
    args = [str(places.get(word, word)) for word in line.split()]
    imported = tmp_path / "imported.txt"
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(imported), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))},
    )
    assert result.returncode == status, result.stderr[-2000:]
    assert fragment in (result.stderr.strip().splitlines() or [""])[-1], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert imported.read_text() == "", f"imported: {imported.read_text()}"
    assert not any(path.exists() for path in places.values() if path != bad)


@pytest.mark.slow
def test_prepare_data_does_not_import_the_network():
    """prepare/ reads the smallest input size from `alexnet_tf.constants`, not from the Keras model."""
    probe = (
        "import pkgutil, sys, importlib, importlib.util, alexnet_tf.prepare as p\n"
        "beam = importlib.util.find_spec('apache_beam') is not None  # beam_runner needs the [beam] extra\n"
        "for m in pkgutil.iter_modules(p.__path__):\n"
        "    if beam or m.name != 'beam_runner': importlib.import_module(f'alexnet_tf.prepare.{m.name}')\n"
        "print(' '.join(n for n in ('alexnet_tf.network.model', 'alexnet_tf.network.layers') if n in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""


def test_shared_constants_have_one_definition():
    assert options.MEAN_MODES is layers.MEAN_MODES is constants.MEAN_MODES
    assert recipe.Recipe().input is not None and recipe.InputOptions is options.InputOptions  # one input config
    assert recipe.INITIALIZATIONS is model.INITIALIZATIONS is constants.INITIALIZATIONS
    assert distribute.STRATEGIES is constants.STRATEGIES
    assert schema.SPLITS is constants.SPLITS
    assert (schema.TRAIN, schema.VALIDATION) == constants.SPLITS
