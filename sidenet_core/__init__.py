"""The bottom layer of sidenet-bench: what the compressors and the sidenet library both need.

Errors, the registry, FLOP counting, training precision, model layouts (ResNet stages, BERT masks) and staged
models (a network cut into segments with taps between them). It imports nothing from ``compressors`` or
``sidenet`` (tests/test_layers.py walks every import, function bodies included, to keep it so).
"""
