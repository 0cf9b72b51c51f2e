"""A trained model for TF Serving and for ``alexnet-tf predict``.

* `serving_model`: `ServingModel`, encoded images in, class probabilities and names out (the
  evaluation preprocessing as graph ops);
* `export`: the SavedModel (signatures, assets, warmup requests, versioned and claimed atomically);
* `warmup`: the ``assets.extra/tf_serving_warmup_requests`` file;
* `predict`: ``alexnet-tf predict`` on image files, through the same `ServingModel`;
* `image_headers`: pixels an encoded image will decode to, read from its header (the limit
  serving enforces before decoding).
"""
