"""The ``alexnet-tf`` command line: a thin layer over the package's importable functions."""

from __future__ import annotations

import click

from alexnet_tf.errors import InputError


class _Group(click.Group):
    """Turns `InputError` into click's one-line ``Error: …`` and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InputError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Group)
@click.version_option(package_name="alexnet-tf")
def main() -> None:
    """AlexNet (Krizhevsky, Sutskever & Hinton, 2012) in TensorFlow / Keras 3."""


@main.command("show-augment")
@click.option("--data-dir", required=True, help="prepare-data output directory (local or gs://).")
@click.option("-o", "--output", required=True, help="PNG file to write.")
@click.option("--split", default="train", show_default=True, help="Split whose first records are shown.")
@click.option("--images", default=4, show_default=True, type=click.IntRange(1, 64), help="Records to show.")
@click.option("--views", default=9, show_default=True, type=click.IntRange(1, 64), help="Training views per record.")
@click.option(
    "--lighting-strength",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="PCA lighting strength in units of the paper's (alpha std 0.1); exaggerated so it is visible.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the views shown.")
def show_augment(
    data_dir: str, output: str, split: str, images: int, views: int, lighting_strength: float, seed: int
) -> None:
    """Write a PNG grid of training views and the ten test crops (§4.1)."""
    from alexnet_tf.data.visualize import write_augment_grid

    width, height = write_augment_grid(
        output, data_dir, split=split, images=images, views=views, lighting_strength=lighting_strength, seed=seed
    )
    click.echo(f"wrote {output} ({width}x{height})")
