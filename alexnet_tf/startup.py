"""TensorFlow's start-up noise, kept out of stderr whenever TensorFlow is first imported.

TF 2.21 logs "oneDNN custom operations are on" (twice, once per library that loads) through
absl before absl's logging is initialised, with a banner saying so; TF_CPP_MIN_LOG_LEVEL does
not reach those lines. They are filtered out of the process's stderr while TensorFlow loads;
everything else it prints there is passed on.

The package imports TensorFlow only when something needs it (so ``alexnet-tf --help`` and the
errors found before any tensor exists answer at once), and that first import may come from any
module, ours or Keras'. So `install` puts a finder first on `sys.meta_path` that wraps the
loading of the ``tensorflow`` package itself, wherever the import statement is; once TensorFlow
is loaded the finder is gone. Whatever imports TensorFlow before `alexnet_tf` does so unfiltered.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import tempfile
import types

_STARTUP_NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "] oneDNN custom operations are on.",
)


def install() -> None:
    """Filters TensorFlow's start-up noise when it is first imported (nothing if already loaded)."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do, with a loader that filters stderr."""

    def find_spec(self, fullname: str, path, target=None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # the real finders, from here on and for this very lookup
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader with fd 2 captured, then passes on all but `_STARTUP_NOISE`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        # The module keeps the real loader (resources, reloads); only this one execution is wrapped.
        module.__spec__.loader = module.__loader__ = self._loader
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self._loader.exec_module(module)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                        if not any(noise in line for noise in _STARTUP_NOISE)]  # fmt: skip
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
