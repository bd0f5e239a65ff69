"""What a timing worker would otherwise import during its first build, imported once in the forkserver instead
(:data:`sidenet.bench.workers.PRELOAD`), so each worker forked from it starts with them.

Measured on the 2-core Zen 4 machine, per worker: BERT's modeling module 1.7 s (transformers imports it lazily on
the first BERT model), ONNX Runtime 0.6 s, and the modules FX quantisation's tracer pulls in on its first
``prepare_fx`` (``torch.export``'s tracer, inductor's config; 0.3–0.6 s). Importing runs no model and starts no
thread pool. Anything missing (an optional dependency) is skipped: the worker then imports it when it needs it.
"""

from __future__ import annotations

import contextlib
import importlib

MODULES = (
    "transformers.models.bert.modeling_bert",
    "onnxruntime",
    "torch.ao.quantization.quantize_fx",
)


def _preload() -> None:
    for name in MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    with contextlib.suppress(ImportError, AttributeError):
        from torch.fx.experimental.symbolic_shapes import uninteresting_files

        uninteresting_files()  # imports torch.export's tracer and inductor modules; its result is cached


_preload()
