"""Compressors (int8 quantisation, fp16/bf16 casts, structured pruning, distillation) and their chains.

Each compressor is a frozen config dataclass registered in ``COMPRESSORS`` by name::

    from compressors import PruneConfig, Int8Config, compose_
    model = compose_(model, [PruneConfig(ratio=0.5), Int8Config()],
                     example_inputs=x, calibration=batches, finetune=train_one_epoch)

``config_from_step("prune", {"ratio": "0.5"})`` builds a config from a chain step's string parameters.
Compressed models keep the torchvision ResNet / BERT attribute layout, so ``sidenet.split_model`` and a
SideNet attach after compression. Importing this package registers FlopCounterMode formulas for the
quantised ops (``compressors.flops``) and for the ONNX Runtime graphs of ``Int8Config(backend="ort")``
(``compressors.ort``).
"""

from compressors.base import (
    COMPRESSORS,
    CompressContext,
    CompressorConfig,
    CompressorEntry,
    compose_,
    compress_,
    compression_log,
    config_from_step,
    register_compressor,
)
from compressors.distill import DistilConfig
from compressors.flops import register_quantized_formulas
from compressors.ort import OrtBertClassifier, OrtBertSplit
from compressors.prune import PruneConfig
from compressors.quantize import Bf16Config, Fp16Config, Int8Config

register_quantized_formulas()

__all__ = [
    "COMPRESSORS",
    "Bf16Config",
    "CompressContext",
    "CompressorConfig",
    "CompressorEntry",
    "DistilConfig",
    "Fp16Config",
    "Int8Config",
    "OrtBertClassifier",
    "OrtBertSplit",
    "PruneConfig",
    "compose_",
    "compress_",
    "compression_log",
    "config_from_step",
    "register_compressor",
]
