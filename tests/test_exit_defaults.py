"""What a bench measures when the user does not say is declared by each exit system, not kept in a name list:
the default specs (``bench_defaults``, ordered by ``default_rank``) and the chains a system's cells run on
(``runs_on``). A system registered from outside measures nothing unasked and runs where the other systems do."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import pytest
from tiny_models import bench_settings

from sidenet.exits import (
    DEFAULT_EXITS,
    EXIT_SYSTEMS,
    RUNS_ON,
    ExitSystemConfig,
    default_exits,
    parse_exit_system,
    register_exit_system,
)
from sidenet.tasks import TASKS

# the default list as it was written out by hand before the systems declared it (commit 0a25fac)
DEFAULTS_AT_0A25FAC = (
    "none",
    "sidenet",
    "sidenet-noexit",
    "sidenet-multi",
    "learned",
    "cascade",
    "eenet",
    "eenet:threshold=val",
)


def test_the_declared_defaults_are_the_old_list_in_its_order() -> None:
    assert DEFAULT_EXITS == default_exits() == DEFAULTS_AT_0A25FAC


@pytest.mark.parametrize("name", EXIT_SYSTEMS.names())
def test_each_declared_default_is_a_spec_of_its_own_system(name: str) -> None:
    cls = EXIT_SYSTEMS.get(name)
    assert cls.runs_on in RUNS_ON
    for spec in cls.bench_defaults:
        assert type(parse_exit_system(spec)) is cls, spec
    assert not (cls.bench_defaults and not cls.timed), "an untimed system has no cells to default to"


@dataclass(frozen=True)
class _Outsider(ExitSystemConfig):
    name: ClassVar[str] = "outsider-probe"
    description: ClassVar[str] = "a system registered from outside the package (test probe)"


@pytest.fixture
def outsider() -> Iterator[type[ExitSystemConfig]]:
    """Registered for one test only, so no other test (or registry-parametrised collection) sees the probe."""
    register_exit_system(_Outsider)
    yield _Outsider
    EXIT_SYSTEMS.remove(_Outsider.name)


def test_a_system_registered_from_outside_is_no_default_and_runs_on_the_system_chains(
    monkeypatch: pytest.MonkeyPatch, outsider: type[ExitSystemConfig]
) -> None:
    assert "outsider-probe" not in default_exits()
    task = TASKS.get("tiny-resnet")
    # the task's default chains: none, int8, prune; its exit-system chains: int8 (the other systems' one chain)
    monkeypatch.setattr(task, "default_chains", ("none", "int8", "prune:ratio=0.5"))
    monkeypatch.setattr(task, "exit_system_chains", ("int8",))
    s = bench_settings(exits=("outsider-probe", "sidenet", "sidenet-noexit", "sidenet:policy=entropy"))
    chains = {e: sorted(c for _, c, ee, _ in s.cells() if ee == e) for e in s.exits}
    assert chains["outsider-probe"] == ["int8", "none"]  # runs_on "system": none + exit_system_chains
    assert chains["sidenet"] == ["int8", "none", "prune:ratio=0.5"]  # runs_on "every", at its default spec
    assert chains["sidenet:policy=entropy"] == ["int8", "none"]  # a variant runs where the other systems do
    assert chains["sidenet-noexit"] == ["none"]  # runs_on "plain"
    monkeypatch.setattr(outsider, "runs_on", "every")
    s = bench_settings(exits=("outsider-probe",))
    assert sorted(c for _, c, _, _ in s.cells()) == ["int8", "none", "prune:ratio=0.5"]
