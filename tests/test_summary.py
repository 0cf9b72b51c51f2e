"""The per-layer table against the paper's numbers (CSC321 table in the project's sources)."""

import json

import pytest
from click.testing import CliRunner

from alexnet_tf.cli import main
from alexnet_tf.network.model import AlexNet
from alexnet_tf.network.summary import summarize

NAMES = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
WEIGHTS = [34_848, 307_200, 884_736, 663_552, 442_368, 37_748_736, 16_777_216, 4_096_000]
# The table misprints conv4's units as 64,869; 13·13·384 = 64,896.
UNITS = [290_400, 186_624, 64_896, 64_896, 43_264, 4_096, 4_096, 1_000]
SHAPES = [(55, 55, 96), (27, 27, 256), (13, 13, 384), (13, 13, 384), (13, 13, 256), (4096,), (4096,), (1000,)]
# W·H·K²·C·M; the table halves conv2's (111,974,400).
CONNECTIONS = [105_415_200, 223_948_800, 149_520_384, 112_140_288, 74_760_192, 37_748_736, 16_777_216, 4_096_000]


@pytest.mark.slow
def test_paper_numbers(full_model):
    counts = summarize(full_model)
    assert [row.name for row in counts.layers] == NAMES
    assert [row.weights for row in counts.layers] == WEIGHTS
    assert [row.units for row in counts.layers] == UNITS
    assert [row.output_shape for row in counts.layers] == SHAPES
    assert [row.connections for row in counts.layers] == CONNECTIONS
    assert counts.conv_subtotal.weights == 2_332_704 and counts.fc_subtotal.weights == 58_621_952
    assert counts.total.weights == 60_954_656
    assert counts.total.biases == 10_568
    assert counts.parameters == 60_965_224 == full_model.count_params()
    assert counts.total.units == 659_272
    assert round(counts.total.connections / 1e6) == 724  # "about 724 M multiply-accumulates"


def test_one_tower_costs_more():
    one = summarize(AlexNet(10, 64, channel_multiplier=0.25, two_towers=False)).total.connections
    two = summarize(AlexNet(10, 64, channel_multiplier=0.25)).total.connections
    grouped = summarize(AlexNet(10, 64, channel_multiplier=0.25, grouped_convolutions=True)).total.connections
    assert grouped == two < one


@pytest.mark.slow
def test_cli_table_and_json():
    runner = CliRunner()
    table = runner.invoke(main, ["summary"])
    assert table.exit_code == 0, table.output
    assert "60,954,656" in table.output and "724,406,816" in table.output and "55×55×96" in table.output
    assert table.output.strip().splitlines()[-1] == "parameters (weights + biases): 60,965,224"
    as_json = runner.invoke(main, ["summary", "--json", "--num-classes", "10", "--channel-multiplier", "0.5"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert [row["name"] for row in data["layers"]] == NAMES
    assert data["layers"][-1]["units"] == 10
    assert data["total"]["weights"] == sum(row["weights"] for row in data["layers"])
    assert data["parameters"] == data["total"]["weights"] + data["total"]["biases"]


def test_cli_rejects_bad_flags_in_one_line():
    result = CliRunner().invoke(main, ["summary", "--input-size", "32"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --input-size 32: must be at least 64"  # AlexNet's `input_size`
    result = CliRunner().invoke(main, ["summary", "--one-tower", "--grouped"])
    assert result.exit_code == 1 and "`grouped_convolutions` must be False with two_towers=False" in result.output
    result = CliRunner().invoke(main, ["summary", "--channel-multiplier", "0"])
    assert result.exit_code == 2 and "'--channel-multiplier'" in result.output
