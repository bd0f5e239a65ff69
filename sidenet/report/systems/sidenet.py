"""The SideNet family's readings (``sidenet``, ``sidenet-multi``, ``sidenet-noexit``), the MainNet alone (``none``)
and the oracle bound (``oracle``), as :mod:`sidenet.exits.sidenet_systems` registers them on the exits side.

No footnote or paragraph: the SideNet is what the generic tables and the complementarity headline are about.
"""

from __future__ import annotations

from sidenet.report.readings import SystemReading, register_reading

SIDENET = "sidenet"
MULTI = "sidenet-multi"

# the MainNet alone, the SideNet's never-exit overhead and the oracle bound take no exit: no row of theirs is a
# system with exits
register_reading(SystemReading("none", has_exits=False, marker="*"))
register_reading(SystemReading("sidenet-noexit", has_exits=False, marker="X", linestyle=":"))
register_reading(SystemReading("oracle", has_exits=False))
register_reading(
    SystemReading(SIDENET, order=0, within_one_network=True, softmax_rank=1, label="SideNet", marker="o", linestyle="-")
)
register_reading(SystemReading(MULTI, order=1, within_one_network=True, softmax_rank=0, marker="s", linestyle="--"))
