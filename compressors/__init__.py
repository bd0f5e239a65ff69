"""Compressors (int8 quantisation, fp16/bf16 casts, GPU weight-only int8/int4, structured pruning, distillation)
and their chains.

Each compressor is a frozen config dataclass registered in ``COMPRESSORS`` by name::

    from compressors import PruneConfig, Int8Config, compose_
    model = compose_(model, [PruneConfig(ratio=0.5), Int8Config()],
                     example_inputs=x, calibration=batches, finetune=train_one_epoch)

``config_from_step("prune", {"ratio": "0.5"})`` builds a config from a chain step's string parameters. A config
also declares its traits (whether it trains and how it is rebuilt from cached weights, its devices and the dtype it
produces, how it composes with exits inside stages: ``compressors.base.CompressorConfig``); callers ask those
instead of switching on a compressor's name.
Compressed models keep the torchvision ResNet / BERT attribute layout, so ``sidenet_core.staged.split_model`` and a
SideNet attach after compression. Importing this package registers FlopCounterMode formulas for the
quantised ops (``compressors.flops``) and for the ONNX Runtime graphs of ``Int8Config(backend="ort")``
(``compressors.ort``), and the one for tinygemm's int4 matmul (``compressors.weight_only``).

GPU weight-only quantisation of the BERT encoder's Linear weights through torchao (``compressors.weight_only``):
``int8wo`` (``Int8WeightOnlyCompressorConfig``: int8 per output channel, fp32 activations) and ``int4wo``
(``Int4WeightOnlyCompressorConfig(group_size=128)``: int4 per group, tinygemm; casts the encoder to bf16
first, as torchao's int4 kernel requires). Both need the model on CUDA, refuse ResNets (their only Linear
is the head) and go last in a chain, on an fp32 model.
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
    rebuild_,
    register_compressor,
)
from compressors.distill import DistilConfig
from compressors.flops import register_quantized_formulas
from compressors.ort import OrtBertClassifier, OrtBertSplit
from compressors.prune import PruneConfig
from compressors.quantize import Bf16Config, Fp16Config, Int8Config
from compressors.weight_only import (
    Int4WeightOnlyCompressorConfig,
    Int8WeightOnlyCompressorConfig,
    register_weight_only_formulas,
)

register_quantized_formulas()
register_weight_only_formulas()

__all__ = [
    "COMPRESSORS",
    "Bf16Config",
    "CompressContext",
    "CompressorConfig",
    "CompressorEntry",
    "DistilConfig",
    "Fp16Config",
    "Int4WeightOnlyCompressorConfig",
    "Int8Config",
    "Int8WeightOnlyCompressorConfig",
    "OrtBertClassifier",
    "OrtBertSplit",
    "PruneConfig",
    "compose_",
    "compress_",
    "compression_log",
    "config_from_step",
    "rebuild_",
    "register_compressor",
]
