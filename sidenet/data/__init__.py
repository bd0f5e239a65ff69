"""Data loading: every loader returns a :class:`Splits` (train/val/test + class names + a one-line source).

Offline sources (Fashion-MNIST from Debian, MNIST and Rotten Tomatoes from pip data wheels) and online-only
ones (CIFAR-10, SST-2) share one interface, so tasks pick a loader by name and never touch files.
"""

from sidenet.data.cifar10 import load_cifar10
from sidenet.data.fashion_mnist import load_fashion_mnist
from sidenet.data.mnist import load_mnist
from sidenet.data.rotten_tomatoes import load_rotten_tomatoes
from sidenet.data.splits import stratified_split
from sidenet.data.sst2 import load_sst2
from sidenet.data.synthetic import TINY_TEXT_VOCAB, tiny_image_splits, tiny_text_splits
from sidenet.data.types import Splits

__all__ = [
    "TINY_TEXT_VOCAB",
    "Splits",
    "load_cifar10",
    "load_fashion_mnist",
    "load_mnist",
    "load_rotten_tomatoes",
    "load_sst2",
    "stratified_split",
    "tiny_image_splits",
    "tiny_text_splits",
]
