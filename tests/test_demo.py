"""``alexnet-tf demo`` at its smallest: synthetic shapes → prepare-data → fit → evaluate, learning."""

import os

import pytest
from click.testing import CliRunner

from alexnet_tf.cli import main
from alexnet_tf.demo import DemoConfig, run_demo

# Three shape classes, fewer images and epochs than the real demo.
SMALL = ("training.epochs=40", "training.batch_size=16")


@pytest.mark.slow
def test_demo_learns_and_says_where_everything_is(tmp_path):
    workdir = str(tmp_path / "demo")
    config = DemoConfig(workdir=workdir, classes=3, per_class=100, overrides=SMALL, progress=False)
    report = run_demo(config)
    assert report.num_classes == 3 and report.train_images == 240 and report.validation_images == 60
    # Held-out images, chance 1/3: well above it with the centre crop and the ten views. Training
    # is not bit-deterministic; six runs here ended at 55-95% (centre). 30 of 60 right happens by
    # chance with p < 0.01.
    assert report.center.models[0].top1_accuracy >= 0.5, report.center.to_text()
    assert report.ten_crop.models[0].top1_accuracy >= 0.5, report.ten_crop.to_text()
    assert sorted(os.listdir(workdir)) == ["images", "records", "run"]
    summary = report.summary()
    for text in (
        "synthetic shapes",
        "chance: 33.3%",
        "tensorboard --logdir",
        "alexnet-tf evaluate",
        "alexnet-tf export",
    ):
        assert text in summary

    # The same command again finds every step complete and prints the same accuracy.
    again = CliRunner().invoke(main, ["demo", "--workdir", workdir, "--quiet", *(f"--set={value}" for value in SMALL)])
    assert again.exit_code == 0, again.output
    assert f"{report.center.models[0].top1_accuracy:.1%} centre crop" in again.output


def test_demo_on_a_missing_folder_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path / "w"), "--data", str(tmp_path / "none")])
    assert result.exit_code != 0 and result.output.startswith("Error: ")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
