"""A client for an alexnet-tf export: TF Serving's REST API, or the SavedModel itself without a server.

    python tools/serving_client.py IMAGE... [--server http://localhost:8501] [--model alexnet] [--version N]
    python tools/serving_client.py IMAGE... --saved-model EXPORT_DIR     # no server: same request, in-process

REST sends the request body TF Serving documents for a one-input signature,
``{"signature_name": "serving_default", "instances": [{"b64": "<standard base64>"}, ...]}``, to
``/v1/models/<model>[/versions/<N>]:predict`` and reads the row-format answer
``{"predictions": [{"probabilities": [...], "top_k_names": [...], ...}, ...]}``. It needs only the
standard library. gRPC would need ``tensorflow-serving-api`` (its stubs), whose wheel requires the
``tensorflow`` distribution and clashes with ``tensorflow-cpu``; see docs/serving.md.

``--saved-model`` answers the same request from an export directory (a base path's newest version,
or one version) through `tf.saved_model.load`, in the same response format: a check of an export
where no server runs. Run from a checkout with the package installed (``pip install -e .``).
Images are local files read with `open`, so the REST path does not import TensorFlow.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Sequence

import click

# The export's output keys (docs/serving.md) that this client prints.
SHOWN_OUTPUTS = ("top_k_probabilities", "top_k_wnids", "top_k_names")


def rest_body(images: Sequence[bytes], signature: str = "serving_default") -> dict:
    """TF Serving's REST predict body for encoded images (row format, base64 as ``{"b64": …}``)."""
    return {
        "signature_name": signature,
        "instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in images],
    }


def predict_rest(server: str, model: str, body: dict, version: int | None = None, timeout: float = 60.0) -> dict:
    """POSTs ``body`` to TF Serving's REST predict endpoint; the decoded JSON answer."""
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else "") + ":predict"
    request = urllib.request.Request(
        server.rstrip("/") + path, data=json.dumps(body).encode("utf-8"), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        # TF Serving answers a bad request (e.g. an image it cannot decode) with {"error": "..."}.
        detail = error.read().decode("utf-8", "replace")
        raise click.ClickException(f"{server}{path}: HTTP {error.code}: {detail}") from None
    except urllib.error.URLError as error:
        raise click.ClickException(f"{server}{path}: {error.reason}; is TF Serving running there?") from None


def predict_saved_model(export_dir: str, body: dict) -> dict:
    """The REST answer to ``body``, computed from an export directory in-process (no server)."""
    import tensorflow as tf

    from alexnet_tf.serving.predict import saved_model_dir
    from alexnet_tf.serving.serving_model import IMAGE_BYTES_INPUT

    path = saved_model_dir(export_dir)
    if path is None:
        raise click.ClickException(f"--saved-model {export_dir}: no SavedModel there or in a version directory")
    signature = tf.saved_model.load(path).signatures[body["signature_name"]]
    images = [base64.b64decode(instance["b64"]) for instance in body["instances"]]
    try:
        outputs = signature(**{IMAGE_BYTES_INPUT: tf.constant(images)})
    except tf.errors.InvalidArgumentError as error:
        return {"error": error.message}
    columns = {key: value.numpy().tolist() for key, value in outputs.items()}
    rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    return {"predictions": [{key: _text(value) for key, value in row.items()} for row in rows]}


def _text(value):
    """Strings as TF Serving's REST API returns them (UTF-8 text, not bytes)."""
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value.decode("utf-8") if isinstance(value, bytes) else value


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--server", default="http://localhost:8501", show_default=True, help="TF Serving's REST address.")
@click.option("--model", default="alexnet", show_default=True, help="TF Serving's --model_name.")
@click.option("--version", type=int, help="A model version (default: the one TF Serving serves).")
@click.option("--saved-model", help="Answer from this export directory in-process instead of a server.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON answer.")
def main(images: tuple[str, ...], server: str, model: str, version: int | None, saved_model: str | None,
         as_json: bool) -> None:  # fmt: skip
    """Classify IMAGES with an alexnet-tf export served by TF Serving (or read directly)."""
    contents = []
    for path in images:
        with open(path, "rb") as f:
            contents.append(f.read())
    body = rest_body(contents)
    answer = predict_saved_model(saved_model, body) if saved_model else predict_rest(server, model, body, version)
    if "error" in answer:
        raise click.ClickException(f"the request failed: {answer['error']}")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    for path, prediction in zip(images, answer["predictions"], strict=True):
        click.echo(path)
        for probability, wnid, name in zip(*(prediction[key] for key in SHOWN_OUTPUTS), strict=True):
            click.echo(f"  {probability:.4f}  {wnid}  {name}")


if __name__ == "__main__":
    main()
