"""sidenet-bench: does an early-exit SideNet still save compute on a compressed MainNet?

Public API (bring your own model)::

    from sidenet import CallableSplit, EarlyExit, SideNet, fit_sidenet, split_model

    split = split_model(my_resnet, "layer1")          # or CallableSplit(head, rest, pool)
    side = fit_sidenet(features, labels, main_logits, num_classes, SideNetConfig())
    cascade = EarlyExit(split, side, threshold=0.9)   # rows that exit never run `rest`

Register a task from your own package with ``sidenet.tasks.register_task(...)``.
"""

from sidenet.early_exit import EarlyExit, ExitOutput
from sidenet.fit import fit_sidenet
from sidenet.policies import POLICIES, register_policy
from sidenet.sidenet import SideNet, SideNetConfig
from sidenet.split import BertSplit, CallableSplit, ResNetSplit, Split, split_model
from sidenet_core.errors import UserError

__version__ = "0.1.0"

__all__ = [
    "POLICIES",
    "BertSplit",
    "CallableSplit",
    "EarlyExit",
    "ExitOutput",
    "ResNetSplit",
    "SideNet",
    "SideNetConfig",
    "Split",
    "UserError",
    "fit_sidenet",
    "register_policy",
    "split_model",
]
