"""The results contract: what each benchmark row carries in ``benchmark.extra_info``.

The harness (``bench/``) writes rows; the report (``sidenet.report``) and other tools read them from a
pytest-benchmark JSON file (``--benchmark-json`` or the file the bench session writes itself). Keep the
required key names stable: other tools read them.

Units: accuracies and rates are fractions in [0, 1]; FLOPs are true FLOPs (2 per multiply-add) per
sample; latencies are seconds. Timing: one timed round runs ``timing_samples`` inputs at
``batch_size``, so latency per sample = round time / ``timing_samples``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidenet.bench.machine import from_machine_info
from sidenet.bench.record_fields import RowError, finite, kind, number_text, short
from sidenet.bench.row_record import STORED_REQUIRED, RowRecord
from sidenet_core.errors import UserError

# The keys every stored row carries (the fields of RowRecord without default); other tools read them, keep the names
# stable. Every key a row may carry, with its type and range: sidenet.bench.row_record.RowRecord, which both the
# harness (before it stores a row) and this loader (RowRecord.load, for every row it reads) check rows against.
REQUIRED_KEYS: tuple[str, ...] = STORED_REQUIRED

MAX_DEPTH = 64  # real files nest about 8 levels; deeper is malformed (and would overflow the report's recursion)
MAX_MAGNITUDE = 1e100  # no measured quantity comes near; larger numbers overflow plot arithmetic into inf


def row_machine_id(row: dict[str, Any]) -> str | None:
    """The machine fingerprint id a row was measured on (``extra_info.machine_id``; rows from before
    fingerprints have none): a results file and a report hold the rows of one machine only."""
    info = row.get("extra_info") if isinstance(row, dict) else None
    value = info.get("machine_id") if isinstance(info, dict) else None
    return value if isinstance(value, str) else None


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a pytest-benchmark JSON and check it holds sidenet-bench rows; one-line error otherwise.

    Every row's ``extra_info`` is read into a :class:`RowRecord` (its field types and ranges: an undeclared key or a
    value of another type is refused) and its timing stats are checked, so a file this accepts renders without a
    traceback. The rows come back as the dicts the file holds (the report reads those); :func:`load_rows` gives
    the records.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"results file {str(path)!r} does not exist; pass a JSON written by the bench") from None
    except OSError as exc:
        raise UserError(f"cannot read results file {str(path)!r}: {exc}") from None
    return parse_results(raw, path)


def load_rows(path: str | Path) -> list[RowRecord]:
    """The sidenet-bench rows of a results file as records (:func:`load_results` checks the file first; keys a row
    predates are filled in as :data:`sidenet.bench.row_record.UPGRADES` says)."""
    return [RowRecord.load(b["extra_info"]) for b in load_results(path)["benchmarks"]]


def parse_results(raw: bytes, path: str | Path) -> dict[str, Any]:
    """:func:`load_results` for bytes already read from ``path`` (named in errors): a caller that reads the file
    under a lock renders, and stamps, exactly the bytes it checked."""
    where = repr(str(path))
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"cannot read results file {where}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise UserError(f"{where} is nested too deeply to read; pass a JSON written by the bench") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise UserError(f"{where} cannot be read as JSON ({_first_line(exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise UserError(f"{where} is not a pytest-benchmark JSON (no 'benchmarks' list)")
    for b in data["benchmarks"]:  # depth first, row by row (so the message can name the row), then the rest
        problem = _scan(b, numbers=False, depth=3) if isinstance(b, dict) else None
        if problem:
            raise UserError(f"{where}: benchmark {_short(b.get('name'))} {problem}; pass a JSON written by the bench")
    problem = _scan(data, numbers=False)
    if problem:
        raise UserError(f"{where} {problem}; pass a JSON written by the bench")
    data = decode_nonfinite(data)
    rows = [b for b in data["benchmarks"] if isinstance(b, dict)]
    ours = [b for b in rows if _is_ours(b)]
    if not ours:
        raise UserError(f"{where} holds no sidenet-bench rows; run `pytest bench/ --benchmark-only` first")
    for b in ours:
        problem = _renderable_problem(b)
        if problem:
            raise UserError(f"{where}: benchmark {_short(b.get('name'))} {problem}")
    problem = _machine_info_problem(data)
    if problem:
        raise UserError(f"{where}: {problem}; re-run the bench or fix the file")
    data["benchmarks"] = ours
    return data


def row_problem(row: Any) -> str | None:
    """Why :func:`load_results` would refuse the values of this stored row (as ``json.loads`` read it: a NaN
    median, an accuracy of ``"NaN"``), or None. Such a row is no resume source: a later run measures that cell
    again and replaces it, where skipping it would keep a file the report refuses however often the bench runs.

    A row that lacks required keys is not judged here (None): the bench writes every key, so it is hand-made or
    from before a key existed, and its cell key (which names the timing protocol and versions) decides."""
    if not isinstance(row, dict) or not _is_ours(row):
        return "is not a sidenet-bench row"
    problem = _scan(row, numbers=False, depth=3)
    if problem:
        return problem
    row = decode_nonfinite(row)
    if any(k not in row["extra_info"] for k in REQUIRED_KEYS):
        return None
    return _renderable_problem(row)


def _is_ours(b: dict[str, Any]) -> bool:
    return isinstance(b.get("extra_info"), dict) and "task" in b["extra_info"]


def _renderable_problem(b: dict[str, Any]) -> str | None:
    """The first reason the report cannot show one of our rows (already depth-checked and decoded), with its fix."""
    missing = [k for k in REQUIRED_KEYS if k not in b["extra_info"]]
    if missing:
        return f"lacks keys {missing}; re-run the bench"
    stats = b.get("stats")
    if stats is None or (isinstance(stats, dict) and "median" not in stats):
        return "has no timing stats; re-run the bench"
    problem = _row_problem(b)
    return f"{problem}; re-run the bench" if problem else None


# ---------------------------------------------------------------------------------------------------
# Non-finite numbers: stored as strings, read back as floats
# ---------------------------------------------------------------------------------------------------

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def results_text(results: dict[str, Any]) -> str:
    """A results dict as the text of a results JSON: strict JSON, every row kept.

    Why non-finite numbers are written as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the spelling
    of protobuf's JSON mapping) rather than refused: a NaN reaches a row from a measurement (an ECE over no rows) or
    from a stored file (pytest-benchmark's own ``--benchmark-json`` writes bare ``NaN``), and refusing it at write
    time refuses the whole merged file, so the newly measured rows would be lost with it, run after run. Python's
    bare ``NaN`` token is not JSON (strict readers reject the file), and ``null`` would read back as "not recorded".
    :func:`load_results` turns the strings back into floats, so a row reads back as it was measured, and a row
    the report cannot show (a NaN median) is no resume source (:func:`row_problem`): the next run replaces it.
    (pytest params, e.g. a Cell, are written as their id through ``default=str``.)"""
    return json.dumps(encode_nonfinite(results), indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"


def encode_nonfinite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its string (see :func:`results_text`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return _number_text(value)
    if isinstance(value, dict):
        return {k: encode_nonfinite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_nonfinite(v) for v in value]
    return value


def decode_nonfinite(value: Any) -> Any:
    """The inverse of :func:`encode_nonfinite`: the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` become floats
    again, wherever they are (no field the bench writes holds one of those words as text)."""
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {k: decode_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_nonfinite(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------
# Validation helpers: each returns a phrase ("has ...") describing the first problem, or None
# ---------------------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


_short = short
_kind = kind
_number_text = number_text
_is_finite = finite


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _scan(value: Any, numbers: bool, depth: int = 1) -> str | None:
    """Nesting deeper than MAX_DEPTH (``value`` sits at ``depth`` in the document) and, with ``numbers``, a number
    beyond MAX_MAGNITUDE, named by where it sits (``extra_info.sweep.threshold[3]``). Iterative, so a deep
    document cannot overflow the stack here."""
    stack: list[tuple[Any, int, str]] = [(value, depth, "")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                return f"is nested more than {MAX_DEPTH} levels deep"
            if isinstance(item, dict):
                stack.extend((v, depth + 1, f"{where}.{k}" if where else str(k)) for k, v in item.items())
            else:
                stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(item))
        elif numbers and _is_number(item) and abs(item) > MAX_MAGNITUDE and abs(item) != math.inf:
            return f"has {_short(where, 50)} = {_number_text(item)}, out of range (|x| ≤ {MAX_MAGNITUDE:g} expected)"
    return None


def _bad(key: str, value: Any, expected: str) -> str:
    return f"has {key} = {_kind(value)}, expected {expected}"


def _list_problem(key: str, value: Any, ok: Callable[[Any], bool], expected: str) -> str | None:
    """``value`` must be null or a list whose every element passes ``ok``; the first offender is named."""
    if value is None:
        return None
    if not isinstance(value, list):
        return _bad(key, value, "a list or null")
    for i, x in enumerate(value):
        if not ok(x):
            return _bad(f"{key}[{i}]", x, expected)
    return None


def _row_problem(b: dict[str, Any]) -> str | None:
    """What is wrong with one row's timing stats and ``extra_info``: the stats for what the report reads of them,
    the ``extra_info`` for :class:`RowRecord` (its field types and ranges, :meth:`RowRecord.load`)."""
    problem = _scan(b, numbers=True, depth=3) or _stats_problem(b["stats"])
    if problem:
        return problem
    try:
        RowRecord.load(b["extra_info"])
    except RowError as exc:
        return str(exc)
    return None


def _stats_problem(stats: Any) -> str | None:
    if not isinstance(stats, dict):
        return f"has stats = {_kind(stats)}, expected an object of timing statistics"
    median = stats["median"]
    if not _is_number(median):
        return f"has a median round time of {_kind(median)}, expected seconds"
    if not math.isfinite(median):
        return f"has a non-finite median ({_number_text(median)})"
    if median <= 0:
        return f"has a median round time of {_number_text(median)} s, expected > 0"
    for key in ("iqr", "q1", "q3"):
        if stats.get(key) is not None and not _is_finite(stats[key]):
            return f"has stats {key} = {_kind(stats[key])}, expected a finite number or null"
    return _list_problem("stats data", stats.get("data"), _is_finite, "a round time in seconds")


def _machine_info_problem(data: dict[str, Any]) -> str | None:
    """The header reads ``machine_info`` (and its ``sidenet``/``cpu`` parts) and ``commit_info`` as objects and
    rebuilds the machine fingerprint from them."""
    for key in ("machine_info", "commit_info"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"{key} is {_kind(data[key])}, expected an object"
    machine = data.get("machine_info") or {}
    for key in ("sidenet", "cpu"):
        if machine.get(key) is not None and not isinstance(machine[key], dict):
            return f"machine_info {key} is {_kind(machine[key])}, expected an object"
    try:
        fingerprint = from_machine_info(machine)
        if fingerprint is not None:
            _ = (fingerprint.describe(), fingerprint.slug, fingerprint.id)  # what the report header shows
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        return f"machine_info does not describe a machine ({type(exc).__name__}: {_first_line(exc)[:80]})"
    return None
