"""sidenet-bench: does an early-exit SideNet still save compute on a compressed MainNet?

Public API (bring your own model)::

    from sidenet import CallableSplit, EarlyExit, SideNet, fit_sidenet, split_model

    split = split_model(my_resnet, "layer1")          # or CallableSplit(head, rest, pool)
    side = fit_sidenet(features, labels, main_logits, num_classes, SideNetConfig())
    cascade = EarlyExit(split, side, threshold=0.9)   # rows that exit never run `rest`

    staged = stage_model(my_resnet, ("layer1", "layer2"))  # or CallableStaged([seg0, seg1, seg2], pool)
    multi = Cascade(staged, [side1, side2], make_policy("softmax"), [0.9, 0.9])  # leave at the first confident exit

Register a task from your own package with ``sidenet.tasks.register_task(...)``.
"""

from sidenet.engine.cascade import Cascade
from sidenet.engine.early_exit import EarlyExit, ExitOutput
from sidenet.engine.fit import fit_sidenet
from sidenet.engine.policies import POLICIES, make_policy, register_policy
from sidenet.engine.sidenet import SideNet, SideNetConfig
from sidenet.engine.split import (
    BertSplit,
    CallableSplit,
    CallableStaged,
    ResNetSplit,
    Split,
    StagedModel,
    split_model,
    stage_model,
)
from sidenet_core.errors import UserError

__version__ = "0.1.0"

__all__ = [
    "POLICIES",
    "BertSplit",
    "CallableSplit",
    "CallableStaged",
    "Cascade",
    "EarlyExit",
    "ExitOutput",
    "ResNetSplit",
    "SideNet",
    "SideNetConfig",
    "Split",
    "StagedModel",
    "UserError",
    "fit_sidenet",
    "make_policy",
    "register_policy",
    "split_model",
    "stage_model",
]
