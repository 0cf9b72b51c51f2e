"""The per-layer table of AlexNet: output shape, units, weights, biases and connections.

Counted from a built model, so the table describes whatever variant was built. Rows are the
paper's layers conv1 … fc8; a two-tower layer's row adds up its towers (output channels
concatenated). The columns follow the CSC321 table in the project's sources:

* units: output neurons of the convolution or dense layer, W·H·M (before pooling);
* weights: kernel entries, K²·C·M for a convolution over C input maps (per tower), in·out
  for a dense layer; biases are counted separately;
* connections: multiply-accumulates of one forward pass, W·H·K²·C·M, or in·out.

At the defaults this gives 60,954,656 weights, 10,568 biases and 724,406,816
multiply-accumulates. (The CSC321 table halves conv2's connections, 111,974,400; each of
conv2's 27·27·256 outputs sees 5·5·48 inputs, which is 223,948,800.)
"""

from __future__ import annotations

import dataclasses
import math
import re

import keras

_PAPER_LAYER = re.compile(r"^(conv[1-5]|fc[6-8])(_tower\d+)?$")


@dataclasses.dataclass
class LayerCounts:
    name: str
    output_shape: tuple[int, ...]
    units: int
    weights: int
    biases: int
    connections: int


@dataclasses.dataclass
class ModelSummary:
    layers: list[LayerCounts]

    def _subtotal(self, name: str, prefix: str) -> LayerCounts:
        rows = [row for row in self.layers if row.name.startswith(prefix)]
        return LayerCounts(
            name=name,
            output_shape=(),
            units=sum(r.units for r in rows),
            weights=sum(r.weights for r in rows),
            biases=sum(r.biases for r in rows),
            connections=sum(r.connections for r in rows),
        )

    @property
    def conv_subtotal(self) -> LayerCounts:
        return self._subtotal("conv subtotal", "conv")

    @property
    def fc_subtotal(self) -> LayerCounts:
        return self._subtotal("fc subtotal", "fc")

    @property
    def total(self) -> LayerCounts:
        return self._subtotal("total", "")

    @property
    def parameters(self) -> int:
        """Weights plus biases: the number `model.count_params()` and the paper's "60 million" count."""
        return self.total.weights + self.total.biases

    def to_dict(self) -> dict:
        return {
            "layers": [dataclasses.asdict(row) for row in self.layers],
            "conv_subtotal": dataclasses.asdict(self.conv_subtotal),
            "fc_subtotal": dataclasses.asdict(self.fc_subtotal),
            "total": dataclasses.asdict(self.total),
            "parameters": self.parameters,
        }

    def to_text(self) -> str:
        header = f"{'layer':<14}{'output shape':>16}{'units':>12}{'weights':>13}{'biases':>9}{'connections':>15}"
        lines = [header, "-" * len(header)]

        def line(row: LayerCounts) -> str:
            shape = "×".join(str(d) for d in row.output_shape)
            return f"{row.name:<14}{shape:>16}{row.units:>12,}{row.weights:>13,}{row.biases:>9,}{row.connections:>15,}"

        lines += [line(row) for row in self.layers]
        lines.append("-" * len(header))
        lines += [line(self.conv_subtotal), line(self.fc_subtotal), line(self.total)]
        lines.append(f"parameters (weights + biases): {self.parameters:,}")
        return "\n".join(lines)


def summarize(model: keras.Model) -> ModelSummary:
    """Counts units, weights, biases and multiply-accumulates per paper layer of ``model``."""
    rows: dict[str, LayerCounts] = {}
    for layer in model.layers:
        match = _PAPER_LAYER.match(layer.name)
        if match is None:
            continue
        out_shape = tuple(layer.output.shape[1:])
        kernel, bias = layer.kernel.shape, layer.bias.shape
        weights = math.prod(kernel)
        # Conv kernel (K, K, C/groups, M): each of the H·W·M outputs sees K·K·C/groups inputs.
        # Dense kernel (in, out): each output sees every input.
        connections = math.prod(out_shape[:-1]) * weights
        counts = LayerCounts(match.group(1), out_shape, math.prod(out_shape), weights, math.prod(bias), connections)
        row = rows.setdefault(counts.name, counts)
        if row is not counts:  # the other tower: same spatial shape, channels concatenated
            row.output_shape = row.output_shape[:-1] + (row.output_shape[-1] + out_shape[-1],)
            row.units += counts.units
            row.weights += counts.weights
            row.biases += counts.biases
            row.connections += counts.connections
    return ModelSummary(layers=list(rows.values()))
