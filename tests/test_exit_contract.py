"""The contract every registered exit system keeps, parametrised over :data:`sidenet.exits.EXIT_SYSTEMS` at
collection time (issue #22): a newly registered system is tested for free, without an edit here.

Why a contract and not one test file per system: the bench treats every system alike (``prepare_system``
traces what ``build`` returns and runs the real :class:`~sidenet.engine.cascade.Cascade` on it), so what a system
must give that path is the same for all of them:

* its config spells itself one way (``label()`` parses back to an equal config), its ``to_dict()`` (the cell key)
  is JSON and names it, and an unknown parameter is a one-line UserError naming the valid ones;
* ``check_task`` accepts the tiny tasks (CI runs every system on them);
* built on a tiny task, its heads read its staged model's taps and its policies score in [0, 1]; at threshold 0
  every row leaves at the first exit and no later segment runs; above 1 every row reaches the end with the
  MainNet's logits; rows that leave never reach a later segment, in a batch or alone.

A system declares ``timed`` and ``has_exits``; untimed systems (the oracle) and systems without exits (``none``)
get their own small assertions below instead of the build contract, never a silent skip. A contract a system
breaks is marked ``xfail(strict=True)`` in :data:`VIOLATIONS` with the exact violation, so fixing it turns the
mark into a failure that asks for the mark's removal.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from tiny_models import bench_settings
from torch import nn

from sidenet.bench.pipeline import build_system, load_or_train_mainnet, load_task_data, model_and_key
from sidenet.engine.cascade import Cascade, ExitOutput
from sidenet.engine.policies import ExitView, Policy, head_output, make_policy
from sidenet.exits import EXIT_SYSTEMS, BuiltSystem, ExitSystemConfig, parse_exit_system
from sidenet.tasks import TASKS, Task
from sidenet.tasks.compressed import Compressed, compress_mainnet
from sidenet_core.errors import UserError
from sidenet_core.layouts import model_logits, select_rows
from sidenet_core.staged import StagedModel

TINY_TASKS = ("tiny-resnet", "tiny-bert")
BATCH = 12  # rows of the test split every cascade check runs on
ABOVE_ONE = 1.0 + 1e-6  # "any value above 1 exits none" (Cascade): the smallest such threshold is the sharpest test
LOGIT_TOL = {"rtol": 1e-5, "atol": 1e-5}  # segments vs the whole MainNet: the same kernels, rounding at most
MIN_GAP = 1e-4  # a mixed threshold sits at least this far from every score: rounding of another batch size
# cannot move a row across it (the cascade is under test, not the CPU's kernels)

# The cheapest valid spelling of a system for the build checks, where its default trains more than a contract
# needs (the smallest values the config accepts). A new system needs no entry: its default config is built.
CHEAPEST: dict[str, str] = {
    "learned": "learned:fit_rows=100,tradeoff=0.1",
    "cascade": "cascade:fit_rows=100,tradeoff=0.1",
    "eenet": "eenet:epochs=1",  # its default today; kept so a costlier default does not slow this file
}

# (system, contract) → (the exact violation found, the exception it raises). Contracts: "build" (every check on a
# built system). Empty: every registered system keeps the contract. At commit 312aefd sidenet-noexit had no build()
# (UserError "exit system 'sidenet-noexit' has no cascade to build"); the one-path change gives it one, so its entry
# went: a strict xfail turns into a failure once the violation is fixed, and asks for the entry's removal.
VIOLATIONS: dict[tuple[str, str], tuple[str, type[BaseException]]] = {}


def _names(keep: Callable[[type[ExitSystemConfig]], bool], contract: str | None = None) -> list[Any]:
    """Registered system names ``keep`` selects, as pytest params (with their known violation's xfail mark)."""
    out = []
    for name in EXIT_SYSTEMS.names():
        if not keep(EXIT_SYSTEMS.get(name)):
            continue
        known = VIOLATIONS.get((name, contract)) if contract else None
        marks = [pytest.mark.xfail(strict=True, reason=known[0], raises=known[1])] if known else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


ALL = _names(lambda cls: True)
BUILT = _names(lambda cls: cls.timed and cls.has_exits, "build")
UNTIMED = _names(lambda cls: not cls.timed)
WITHOUT_EXITS = _names(lambda cls: cls.timed and not cls.has_exits)


def test_every_registered_system_falls_under_exactly_one_contract() -> None:
    """The partition the parametrisation relies on: nothing registered escapes every check below."""
    groups = [BUILT, UNTIMED, WITHOUT_EXITS]
    seen = [p.values[0] for g in groups for p in g]
    assert sorted(seen) == EXIT_SYSTEMS.names() and len(seen) == len(set(seen))
    assert {"none", "oracle", "sidenet"} <= set(seen)  # the registry is really read (the built-ins registered)


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ALL)
def test_the_default_label_parses_back_to_an_equal_config(name: str) -> None:
    config = parse_exit_system(name)
    assert config.label() == name, "a default config is spelled by its name alone (one cell per config)"
    assert parse_exit_system(config.label()) == config
    cheap = parse_exit_system(CHEAPEST.get(name, name))
    assert parse_exit_system(cheap.label()) == cheap and parse_exit_system(cheap.label()).label() == cheap.label()


@pytest.mark.parametrize("name", ALL)
def test_to_dict_is_json_names_the_system_and_holds_every_field(name: str) -> None:
    config = parse_exit_system(CHEAPEST.get(name, name))
    d = config.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["system"] == name
    fields = {f.name for f in dataclasses.fields(config)}
    assert set(d) == fields | {"system"}, "every field is in the cell key, defaults included"
    rebuilt = type(config)(**{k: v for k, v in d.items() if k != "system"})
    assert rebuilt == config


@pytest.mark.parametrize("name", ALL)
def test_an_unknown_parameter_is_a_one_line_error_naming_the_valid_ones(name: str) -> None:
    with pytest.raises(UserError) as info:
        parse_exit_system(f"{name}:no_such_knob=1")
    text = str(info.value)
    assert "\n" not in text and "no_such_knob" in text and name in text
    valid = [f.name for f in dataclasses.fields(EXIT_SYSTEMS.get(name))]
    assert all(v in text for v in valid), (valid, text)
    if not valid:
        assert "valid: none" in text


@pytest.mark.parametrize("task_name", TINY_TASKS)
@pytest.mark.parametrize("name", ALL)
def test_check_task_accepts_the_tiny_tasks(name: str, task_name: str) -> None:
    before = torch.random.get_rng_state()
    for spec in dict.fromkeys((name, CHEAPEST.get(name, name))):
        parse_exit_system(spec).check_task(TASKS.get(task_name))
    assert torch.equal(torch.random.get_rng_state(), before), "the check must leave the global RNG as it was"


# ---------------------------------------------------------------- systems outside the build contract


@pytest.mark.parametrize("name", UNTIMED)
def test_an_untimed_system_gets_no_cell_of_its_own(name: str) -> None:
    """Untimed systems (the oracle) are computed from the timed ones' traces: alone they time nothing."""
    assert not EXIT_SYSTEMS.get(name).timed
    assert bench_settings(exits=(name,)).n_cells() == 0
    with_timed = bench_settings(exits=("sidenet", name))
    assert with_timed.n_cells() > 0 and all(e != name for _, _, e, _ in with_timed.cells())


@pytest.mark.parametrize("name", WITHOUT_EXITS)
def test_a_system_without_exits_is_timed_and_builds_no_exit(name: str, tiny: TinyWorld) -> None:
    """``none`` is the MainNet alone: it has cells, and the generic path builds either nothing (a one-line
    UserError) or a staged model with no head, whose cascade is the MainNet itself."""
    cls = EXIT_SYSTEMS.get(name)
    assert cls.timed and not cls.has_exits
    assert bench_settings(exits=(name,)).n_cells() > 0
    world = tiny.get("tiny-resnet")
    try:
        built = world.build(name)
    except UserError as exc:
        assert "\n" not in str(exc) and name in str(exc)
        return
    assert built.heads == []
    x = world.inputs(BATCH)
    out = Cascade(built.staged, [], built.policy, []).run(x)
    assert not bool(out.exited.any())
    torch.testing.assert_close(out.logits, _logits(world.comp.model, x), **LOGIT_TOL)


# ---------------------------------------------------------------- building systems on the tiny tasks


@dataclass
class World:
    """One tiny task, its data, its trained MainNet (chain none) and every system built on it so far."""

    task: Task
    data: Any  # sidenet.bench.pipeline.TaskData
    trained: tuple[nn.Module, dict[str, Any]]
    comp: Compressed
    built: dict[str, BuiltSystem]

    def mainnet_for(self, chain: str) -> tuple[nn.Module, str]:
        model, meta = self.trained
        return model_and_key(compress_mainnet(self.task, model, meta["key"], self.data.data, chain, False))

    def build(self, name: str) -> BuiltSystem:
        if name not in self.built:
            self.built[name] = build_system(
                self.task,
                self.data.data,
                self.data.num_classes,
                parse_exit_system(CHEAPEST.get(name, name)),
                self.comp,
                self.trained[0],
                progress=False,
                mainnet_for=self.mainnet_for,
                baseline_key=self.trained[1]["key"],
            )
        return self.built[name]

    def inputs(self, rows: int) -> Any:
        return self.task.batches(self.data.data["test"], rows)[0][0]


class TinyWorld:
    """Worlds made on first use: a test of tiny-resnet does not pay for training the tiny BERT."""

    def __init__(self) -> None:
        self.worlds: dict[str, World] = {}

    def get(self, task_name: str) -> World:
        if task_name not in self.worlds:
            task = TASKS.get(task_name)
            data = load_task_data(task)
            trained = load_or_train_mainnet(task, data.data, data.num_classes, progress=False)
            comp = compress_mainnet(task, trained[0], trained[1]["key"], data.data, "none", False)
            self.worlds[task_name] = World(task, data, trained, comp, {})
        return self.worlds[task_name]


@pytest.fixture(scope="module")
def tiny() -> TinyWorld:
    return TinyWorld()


def _logits(model: nn.Module, x: Any) -> torch.Tensor:
    with torch.no_grad():
        return model_logits(model, x)


class SegmentRecorder:
    """Records every way a staged model can be asked to run past a tap (``segment(i ≥ 1)``, ``rest``,
    ``run_from(i ≥ 1)``), with the state it was given: a staged model may override ``rest`` without going through
    ``segment`` (``Split``), so watching ``segment`` alone could miss later work."""

    def __init__(self, staged: StagedModel, monkeypatch: pytest.MonkeyPatch) -> None:
        self.staged = staged
        self.real_segment = staged.segment
        self.calls: list[tuple[str, int, Any]] = []
        for method, index in (("segment", None), ("rest", 1), ("run_from", None)):
            monkeypatch.setattr(staged, method, self._wrap(method, getattr(staged, method), index))

    def _wrap(self, method: str, real: Callable[..., Any], index: int | None) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            i, state = (index, args[0]) if index is not None else (args[0], args[1])
            self.calls.append((method, i, state))
            return real(*args)

        return wrapper

    def later(self) -> list[tuple[str, int, Any]]:
        return [c for c in self.calls if c[1] >= 1]

    def rows(self, state: Any) -> int:
        with torch.no_grad():
            return int(self.staged.features(state).shape[0])


def _exit0(built: BuiltSystem, x: Any, policy: Policy) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """(the state at tap 0, exit 0's logits, ``policy``'s scores there) for batch ``x``, run outside any cascade."""
    with torch.no_grad():
        state = built.staged.segment(0, x)
        features = built.staged.features(state)
        logits, own = head_output(built.heads[0](features))
        return state, logits, policy.score(ExitView(logits, features, 0, own))


def _split_threshold(scores: np.ndarray) -> float | None:
    """A threshold with rows on both sides, midway in the widest gap of at least :data:`MIN_GAP` (None: none)."""
    values = np.unique(scores)
    if len(values) < 2:
        return None
    gaps = np.diff(values)
    k = int(np.argmax(gaps))
    return float((values[k] + values[k + 1]) / 2) if gaps[k] >= MIN_GAP else None


BUILD_TASKS = [pytest.param("tiny-resnet", id="tiny-resnet"), pytest.param("tiny-bert", id="tiny-bert")]


def _built(tiny: TinyWorld, task_name: str, name: str) -> tuple[World, BuiltSystem]:
    world = tiny.get(task_name)
    return world, world.build(name)


@pytest.mark.parametrize("task_name", BUILD_TASKS)
@pytest.mark.parametrize("name", BUILT)
def test_the_heads_read_the_staged_taps_and_the_policies_score_in_0_1(
    name: str, task_name: str, tiny: TinyWorld
) -> None:
    world, built = _built(tiny, task_name, name)
    staged = built.staged
    assert len(built.heads) == len(staged.taps) == staged.n_segments - 1 >= 1
    x = world.inputs(BATCH)
    state = x
    with torch.no_grad():
        for i, head in enumerate(built.heads):
            state = staged.segment(i, state)
            features = staged.features(state)
            logits, own = head_output(head(features))
            assert logits.shape == (BATCH, world.data.num_classes), f"exit {i} ({staged.taps[i]})"
            assert own is None or own.shape == (BATCH,)
            for policy in built.candidates or (built.policy,):
                score = policy.score(ExitView(logits, features, i, own))
                assert score.shape == (BATCH,), policy.name
                assert bool(((score >= 0) & (score <= 1)).all()), (policy.name, score)
        assert staged.segment(len(built.heads), state).shape == (BATCH, world.data.num_classes)


def _holds(tree: Any, wanted: dict[str, Any]) -> bool:
    if tree == wanted:
        return True
    children = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list | tuple) else ()
    return any(_holds(c, wanted) for c in children)


@pytest.mark.parametrize("task_name", BUILD_TASKS)
@pytest.mark.parametrize("name", BUILT)
def test_the_built_identity_is_json_and_carries_the_whole_config(name: str, task_name: str, tiny: TinyWorld) -> None:
    """``identity`` is the cache key of the system's traced evaluations (``system-evals``): without every field of
    the config in it, two configs on the same trained parts (``eenet`` at threshold 0.5 and ``threshold=val``) would
    read each other's cached numbers."""
    _, built = _built(tiny, task_name, name)
    assert json.loads(json.dumps(built.identity)) == built.identity  # strict: no default=str rescues it
    assert _holds(built.identity, parse_exit_system(CHEAPEST.get(name, name)).to_dict())


@pytest.mark.parametrize("batch", [1, BATCH])
@pytest.mark.parametrize("task_name", BUILD_TASKS)
@pytest.mark.parametrize("name", BUILT)
def test_at_threshold_0_every_row_leaves_at_the_first_exit_and_no_later_segment_runs(
    name: str, task_name: str, batch: int, tiny: TinyWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, built = _built(tiny, task_name, name)
    x = select_rows(world.inputs(BATCH), torch.arange(batch))
    _, first_logits, _ = _exit0(built, x, built.policy)
    rec = SegmentRecorder(built.staged, monkeypatch)
    out = Cascade(built.staged, built.heads, built.policy, [0.0] * len(built.heads)).run(x)
    assert out.exit_index.tolist() == [0] * batch and bool(out.exited.all())
    assert rec.later() == [], [(m, i) for m, i, _ in rec.later()]
    torch.testing.assert_close(out.logits, first_logits, **LOGIT_TOL)


@pytest.mark.parametrize("batch", [1, BATCH])
@pytest.mark.parametrize("task_name", BUILD_TASKS)
@pytest.mark.parametrize("name", BUILT)
def test_above_threshold_1_every_row_reaches_the_end_with_the_mainnets_logits(
    name: str, task_name: str, batch: int, tiny: TinyWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference is the chain's MainNet; for a system that retrains the backbone (EENets) the MainNet is the
    retrained network, which only its staged model holds: its segments run one after another, with no exit."""
    world, built = _built(tiny, task_name, name)
    x = select_rows(world.inputs(BATCH), torch.arange(batch))
    if EXIT_SYSTEMS.get(name).retrains_backbone:
        with torch.no_grad():
            reference = built.staged.run_from(0, x)
    else:
        reference = _logits(world.comp.model, x)
    rec = SegmentRecorder(built.staged, monkeypatch)
    out: ExitOutput = Cascade(built.staged, built.heads, built.policy, [ABOVE_ONE] * len(built.heads)).run(x)
    assert out.exit_index.tolist() == [len(built.heads)] * batch and not bool(out.exited.any())
    torch.testing.assert_close(out.logits, reference, **LOGIT_TOL)
    ran = {i for m, i, _ in rec.calls if m == "segment"}
    assert ran == set(range(built.staged.n_segments)), "every segment runs once the rows stay"
    assert all(rec.rows(s) == batch for m, _, s in rec.later())


def _mixed_policy(built: BuiltSystem, x: Any) -> tuple[Policy, float, torch.Tensor]:
    """The system's own policy with a threshold that splits the batch at exit 0; the softmax policy on the same
    head where the system's scores do not spread (a learned policy may decide one way for every row): the routing
    of rows through the staged model is under test, and it does not depend on which scores chose them."""
    for policy in (built.policy, make_policy("softmax")):
        _, _, scores = _exit0(built, x, policy)
        threshold = _split_threshold(scores.double().numpy())
        if threshold is not None:
            return policy, threshold, scores
    raise AssertionError("no policy spreads this batch's rows at exit 0: pick another batch")


@pytest.mark.parametrize("task_name", BUILD_TASKS)
@pytest.mark.parametrize("name", BUILT)
def test_rows_that_leave_never_reach_a_later_segment_in_a_batch_or_alone(
    name: str, task_name: str, tiny: TinyWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, built = _built(tiny, task_name, name)
    staged, n_exits = built.staged, len(built.heads)
    x = world.inputs(BATCH)
    policy, threshold, scores = _mixed_policy(built, x)
    thresholds = [threshold] + [ABOVE_ONE] * (n_exits - 1)  # only exit 0 lets rows go
    leave = scores >= threshold
    stay = (~leave).nonzero().squeeze(1)
    assert 0 < int(leave.sum()) < BATCH
    with torch.no_grad():
        state0 = staged.segment(0, x)
        stayers_features = staged.features(state0).index_select(0, stay)  # pooled per row: no select() involved
    rec = SegmentRecorder(staged, monkeypatch)
    out = Cascade(staged, built.heads, policy, thresholds).run(x)
    assert torch.equal(out.exited, leave)
    assert out.exit_index.tolist() == [0 if bool(v) else n_exits for v in leave]
    later = rec.later()
    assert later and all(rec.rows(s) == len(stay) for _, _, s in later), [(m, i, rec.rows(s)) for m, i, s in later]
    # the state that went on is the stayers' own, not some other rows' of the same count
    entering = next(s for _, i, s in later if i == 1)
    with torch.no_grad():
        torch.testing.assert_close(staged.features(entering), stayers_features, rtol=0, atol=0)
    # batch size 1: a row that leaves runs nothing after segment 0; a row that stays runs every segment
    for r in range(BATCH):
        rec.calls.clear()
        alone = Cascade(staged, built.heads, policy, thresholds).run(select_rows(x, torch.tensor([r])))
        if bool(leave[r]):
            assert alone.exit_index.tolist() == [0] and rec.later() == [], r
        else:
            assert alone.exit_index.tolist() == [n_exits], r
            assert {i for m, i, _ in rec.calls if m == "segment"} == set(range(staged.n_segments)), r
