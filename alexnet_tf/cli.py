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
