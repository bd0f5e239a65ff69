"""sidenet-bench: does an early-exit SideNet still save compute on a compressed MainNet?

Public API (bring your own model)::

    from sidenet import CallableSplit, EarlyExit, SideNet, fit_sidenet, split_model

    split = split_model(my_resnet, "layer1")          # or CallableSplit(head, rest, pool)
    side = fit_sidenet(features, labels, main_logits, num_classes, SideNetConfig())
    cascade = EarlyExit(split, side, threshold=0.9)   # rows that exit never run `rest`

    staged = stage_model(my_resnet, ("layer1", "layer2"))  # or CallableStaged([seg0, seg1, seg2], pool)
    multi = Cascade(staged, [side1, side2], make_policy("softmax"), [0.9, 0.9])  # leave at the first confident exit

Register a task from your own package with ``sidenet.tasks.register_task(...)``.

Every public name is imported on first use (PEP 562 ``__getattr__``), not when the package is. Why: every
``sidenet.*`` import, the ``sidenet-bench`` console script's included, runs this file first, and the engine pulls
in torch (seconds). Eager, a Ctrl-C in those seconds hit the interpreter before the CLI could catch it and printed
a traceback; lazy, the CLI is running (and handles Ctrl-C in one line) before anything heavy is imported.
``from sidenet import X`` and ``sidenet.X`` work as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sidenet_core.errors import UserError

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
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

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "Cascade": "sidenet.engine.cascade",
    "EarlyExit": "sidenet.engine.early_exit",
    "ExitOutput": "sidenet.engine.early_exit",
    "fit_sidenet": "sidenet.engine.fit",
    "POLICIES": "sidenet.engine.policies",
    "make_policy": "sidenet.engine.policies",
    "register_policy": "sidenet.engine.policies",
    "SideNet": "sidenet.engine.sidenet",
    "SideNetConfig": "sidenet.engine.sidenet",
    **dict.fromkeys(
        (
            "BertSplit",
            "CallableSplit",
            "CallableStaged",
            "ResNetSplit",
            "Split",
            "StagedModel",
            "split_model",
            "stage_model",
        ),
        "sidenet.engine.split",
    ),
}

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


def __getattr__(name: str) -> Any:
    """A public name, imported from its module the first time it is asked for (then cached here)."""
    module = _LAZY.get(name)
    if module is None:  # also how ``from sidenet import cli`` learns it must import the submodule
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
