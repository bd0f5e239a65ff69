"""Markdown report: environment, timing checks, per-task tables, exit systems, operating points, method notes.

``render_markdown`` is pure (results in, text out) so it is testable and can fail before anything is written;
:mod:`sidenet.report.publish` writes it and the plots.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from datetime import datetime
from typing import Any
from urllib.parse import quote

from tabulate import tabulate

from sidenet.bench.machine import from_machine_info
from sidenet.bench.results import row_machine_id
from sidenet.bench.timing_checks import AA_BAND, BUSY_SHARE, QUIET_ADVICE, largest_drift, reference_cells, row_flags
from sidenet.report import plots
from sidenet.report.complementarity import (
    BEST_MAX_LOSS_PT,
    Quad,
    batch_composition_line,
    best_quad,
    best_sentence,
    complementarity,
    complementarity_missing,
    complementarity_quads,
    complementarity_table,
    compression_line,
    verdict,
)
from sidenet.report.exit_rows import exit_variants, fmt_placement, network_selection
from sidenet.report.exit_table import exit_systems_table
from sidenet.report.formatting import DASH, NOISY_MARK, Table, fmt_threshold, md_escape
from sidenet.report.numbers import NOISY_REL_IQR, as_float
from sidenet.report.overview import exit_systems_reading
from sidenet.report.readings import families
from sidenet.report.system_complementarity import system_complementarity_table
from sidenet.report.tables import calibration_line, main_table, sweep_table
from sidenet.report.variants import (
    Variant,
    baseline_for,
    batch_sizes,
    best_batch_size,
    compressed_chains,
    devices,
    group_by_task,
)
from sidenet_core.errors import UserError

NOTES = f"""\
## Notes

- **FLOPs** are counted with `torch.utils.flop_counter.FlopCounterMode`: 2 × the multiply-adds of \
matmul, convolution and attention only; embeddings, norms, activations and pooling count 0. \
FLOPs/sample of an early-exit row is the average over the test set at the chosen threshold.
- **Threshold** is chosen on the validation split for the accuracy-loss target `target_loss_pt`; \
test accuracy, exit rate and FLOPs are then measured on the test split (never tuned on it).
- **Δ acc** is in percentage points vs the fp32 uncompressed MainNet (chain `none`, exit `none`) of the \
same task and device; a compressed chain's MainNet row shows its own accuracy cost.
- **Latency/sample** = median round time / samples per round (`timing_samples`; one batch when not \
recorded). Timing protocols 4 to 6 cut each cell's timing set into slices (`timing_slices`), each run in two rounds; \
protocols 5 and 6 run every round in clean worker processes (variant workers that only loaded what they time — \
protocol 5: a new pair per cell; 6: a pair per task and chain, serving each cell from a fresh copy — and the fp32 \
MainNet in reference workers shared by the cells of a task and batch size; see *Timing checks*); \
the same slices serve every row of a task and batch size, so paired ratios compare the same inputs. \
±x% is the IQR of the round times relative to their median (protocol 4: of each round relative to the mean of \
its slice's two rounds, so slices that cost more — another exit mix, longer texts — do not read as noise); rows \
with IQR/median > \
{NOISY_REL_IQR:.2f} are marked ⚠ and kept (a speedup is marked ⚠ when either timing it divides is).
- **Speedup** = fp32 MainNet latency / row latency at the same batch size (ratio of medians); \
† marks a paired speedup: the median (q1–q3) of per-round ratios from rounds timed interleaved with an \
fp32 MainNet round, which cancels drift that a ratio of medians would not. Rows with `pairing` = `aba` \
(protocol 4) ran one MainNet round between the two rounds of each slice, so one ratio has it right after the \
row's round and one right before; `balanced` (protocol 3) ran it before the row's round in even rounds and after \
it in odd ones: either way a cost of going first or second cancels (older rows: always before). \
The fp32 MainNet's own row is paired with itself \
the same way (**A/A**, §): the median (q1–q3) of ratios that should be 1.00 — the noise floor of the paired \
speedups on this machine; a speedup or overhead inside that band is not distinguishable from none.
- **FLOP speedup** = fp32 MainNet FLOPs/sample ÷ row FLOPs/sample: what FLOPs alone predict. Measured speedup ÷ \
FLOP speedup below 1 means the skipped layers cost less time than their FLOP share (or overheads dominate); \
above 1, more. FLOPs ignore precision: an int8 or fp16 multiply-add counts like an fp32 one (see **dtype**).
- **sidenet-noexit** is the cascade with a threshold above 1 (nothing exits): the SideNet's pure overhead.
- **Exit systems** compares every system with exits at its validation-selected operating point. The **oracle** \
rows are bounds from the recorded outputs of every exit on test, for one exit placement: each input leaving at \
its first right exit, or at the first exit agreeing with the MainNet. **FLOPs ÷ oracle** divides a system's \
FLOPs by the least any exit policy on its exits needs for its accuracy (Σ first-exit costs + the k smallest \
extra costs of reaching each input's first right exit, k = the inputs it must get right).
- **Bolukbasi et al. 2017 here** (with `learned` or `cascade` rows): the learned policy vs the softmax threshold \
on the same exits compares FLOPs at equal accuracy — each operating point's FLOPs (as its sweep counts them) vs the \
least FLOPs at which the other system's threshold sweep on test reaches that accuracy, interpolated linearly; \
differences within 2% count as none. Network selection (`cascade`) is compared with the early exit (`sidenet`, \
`sidenet-multi`, `learned`) saving the most FLOPs within the task's target on the same chain. The headline check \
takes every exit system on every chain within 1 pt of the fp32 MainNet on test.
"""


MAX_FLAGGED_LISTED = 25


def _code(text: str) -> str:
    """Inline code that survives backticks inside the text."""
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _when(results: dict[str, Any]) -> str:
    raw = results.get("datetime")
    if not isinstance(raw, str):
        return DASH
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(raw).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return raw


def _first_info(results: dict[str, Any]) -> dict[str, Any]:
    rows = results.get("benchmarks") or []
    return rows[0]["extra_info"] if rows else {}


def _header(results: dict[str, Any]) -> list[str]:
    side = (results.get("machine_info") or {}).get("sidenet") or {}
    command = side.get("command")
    lines = ["# sidenet-bench report", "", f"- **When:** {_when(results)}"]
    lines.append(f"- **Command:** {_code(str(command)) if command else DASH}")
    commit = results.get("commit_info") or {}
    if commit.get("id"):
        dirty = " (dirty)" if commit.get("dirty") else ""
        lines.append(f"- **Commit:** {_code(str(commit['id'])[:12])}{dirty}")
    runs = _runs(results)
    if len(runs) > 1 or (runs and runs[0][0] is None):
        lines.append(f"- **Rows measured by {len(runs)} runs** (results merge across runs; newest last):")
        for run, count in runs:
            lines.append(f"  - {count} rows: {_run_text(run)}")
    return [*lines, ""]


def _runs(results: dict[str, Any]) -> list[tuple[dict[str, Any] | None, int]]:
    """(the run that measured them, row count) for the rows' ``extra_info["run"]``, oldest first; rows from
    before runs were recorded count under None."""
    counts: dict[str, tuple[dict[str, Any] | None, int]] = {}
    for row in results.get("benchmarks") or []:
        run = (row.get("extra_info") or {}).get("run")
        run = run if isinstance(run, dict) else None
        key = json.dumps(run, sort_keys=True, default=str)
        counts[key] = (run, counts.get(key, (run, 0))[1] + 1)
    return sorted(counts.values(), key=lambda rc: ("" if rc[0] is None else str(rc[0].get("when")), str(rc[0])))


def _run_text(run: dict[str, Any] | None) -> str:
    if run is None:
        return "by an earlier run that did not record itself"
    commit = run.get("commit")
    at = f" at {_code(str(commit))}{' (dirty)' if run.get('dirty') else ''}" if commit else ""
    command = run.get("command")
    return f"run finished {run.get('when') or DASH}{at}" + (f", {_code(str(command))}" if command else "")


def _environment(results: dict[str, Any]) -> list[str]:
    machine = results.get("machine_info") or {}
    side = machine.get("sidenet") or {}
    info = _first_info(results)
    versions = info.get("versions") if isinstance(info.get("versions"), dict) else {}

    def pick(key: str, *fallbacks: Any) -> str:
        for value in (side.get(key), *fallbacks):
            if value not in (None, ""):
                return str(value)
        return DASH

    device = pick("device", info.get("device"))
    if side.get("device_name"):
        device += f" ({side['device_name']})"
    fingerprint = from_machine_info(machine)
    if fingerprint is None:
        machine_text = f"{pick('cpu', (machine.get('cpu') or {}).get('brand_raw'))} (fingerprint not recorded)"
    else:
        rebuilt = " (rebuilt from pytest-benchmark's py-cpuinfo record)"
        recorded = "" if isinstance(side.get("machine"), dict) else rebuilt
        machine_text = f"{fingerprint.describe()}; fingerprint `{fingerprint.slug}` id `{fingerprint.id}`{recorded}"
    items = [
        ("machine", machine_text),
        ("threads", pick("threads", info.get("threads"))),
        ("device", device),
        ("MainNet training precision", pick("train_precision", info.get("train_precision"))),
        ("timing protocol", pick("timing_protocol", info.get("timing_protocol"))),
        ("largest reference drift", _drift_text(results.get("benchmarks") or [])),
        ("python", pick("python", machine.get("python_version"))),
    ]
    names = [k for k in versions if k != "sidenet-bench"] or ["torch", "torchvision", "transformers"]
    items += [(name, pick(name, versions.get(name))) for name in names]
    if versions.get("sidenet-bench"):
        items.append(("sidenet-bench", str(versions["sidenet-bench"])))
    return ["## Environment", "", *(f"- **{k}:** {v if k == 'machine' else md_escape(v)}" for k, v in items), ""]


def _drift_text(rows: list[dict[str, Any]]) -> str:
    """The largest drift of a row's fp32 reference from its reference cell's, for the environment line."""
    drift = largest_drift(rows)
    if drift is None:
        return DASH
    mark = f" {NOISY_MARK}" if abs(drift.value - 1) > drift.band else ""
    return f"{drift.value:.3f}× (band ±{drift.band:.0%}; see Timing checks){mark}"


def with_timing_flags(results: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``results`` whose rows carry ``timing_flags`` (:mod:`sidenet.bench.timing_checks`): one text per reason
    the row's timing is suspect. Flagged rows are marked ⚠ like noisy ones. The stored results are not changed."""
    rows = list(results.get("benchmarks") or [])
    flags = row_flags(rows)
    marked = [{**r, "timing_flags": [f.text for f in fs]} for r, fs in zip(rows, flags, strict=True)]
    return {**results, "benchmarks": marked}


def _timing_checks(results: dict[str, Any]) -> list[str]:
    """How the rows were timed and what the checks across them found (protocol 5: clean worker processes)."""
    rows = results.get("benchmarks") or []
    infos = [r.get("extra_info") or {} for r in rows]
    lines = ["## Timing checks", ""]
    workers = [i["workers"] for i in infos if isinstance(i.get("workers"), dict)]
    if workers:
        pairs = sorted({len(w.get("pairs") or []) for w in workers})
        trained = sum(1 for w in workers if w.get("trained_in_worker"))
        agreement = min(float(w.get("prediction_agreement") or 0) for w in workers)
        reused = sum(1 for w in workers if any(p.get("variant_served_before") for p in w.get("pairs") or []))
        lines.append(
            f"- **Where rounds ran:** {len(workers)} of {len(rows)} rows in clean worker processes "
            f"({workers[0].get('start_method')} children that only loaded their models; "
            f"{'/'.join(map(str, pairs))} independent worker pair(s) per cell; {trained} worker(s) trained anything). "
            f"Each worker repeated at least {agreement:.1%} of the bench's predictions on its first slice."
        )
        if reused:
            lines.append(
                f"- **Reused workers:** {reused} row(s) were timed by variant workers that had served earlier cells "
                "of the same task and chain (each cell from a fresh deep copy of its model; timing protocol 6; "
                "`--bench-fresh-workers` starts a pair per cell)."
            )
    else:
        lines.append("- **Where rounds ran:** in the bench process (rows from before timing protocol 5).")
    drift = largest_drift(rows)
    if drift is not None:
        where = (
            f"`{md_escape(drift.task)}` bs {drift.batch_size}, chain `{md_escape(drift.chain)}`, "
            f"`{md_escape(drift.exit)}`"
        )
        mark = f" {NOISY_MARK}" if abs(drift.value - 1) > drift.band else ""
        lines.append(
            f"- **Largest reference drift:** {drift.value:.3f}× of the reference cell "
            f"({where}; band ±{drift.band:.0%}){mark}."
        )
    for (task, _, bs), ref in sorted(reference_cells(rows).items(), key=lambda kv: (str(kv[0][0]), kv[0][2] or 0)):
        aa = ref.get("aa_paired_ratios") or []
        if len(aa) >= 2:
            q = statistics.quantiles([float(x) for x in aa], n=4, method="inclusive")
            med = statistics.median(float(x) for x in aa)
            ok = AA_BAND[0] <= med <= AA_BAND[1]
            lines.append(
                f"- **A/A `{md_escape(str(task))}` bs {bs}:** {med:.3f} ({q[0]:.3f}–{q[2]:.3f})"
                + ("" if ok else f" {NOISY_MARK} outside {AA_BAND[0]}–{AA_BAND[1]}")
            )
    shares = [
        float(i["machine_load"]["other_cpu_share"])
        for i in infos
        if isinstance(i.get("machine_load"), dict) and isinstance(i["machine_load"].get("other_cpu_share"), int | float)
    ]
    if shares:
        busy = sum(1 for x in shares if x > BUSY_SHARE)
        lines.append(
            f"- **Machine load while timing:** other processes used at most {max(shares):.0%} of the cores "
            f"(median {statistics.median(shares):.0%}); {busy} row(s) above {BUSY_SHARE:.0%}"
            + (f" {NOISY_MARK}: {QUIET_ADVICE}." if busy else ".")
        )
    flagged = [(r, r.get("timing_flags")) for r in rows if r.get("timing_flags")]
    if flagged:
        lines.append(f"- **{len(flagged)} row(s) flagged {NOISY_MARK}** (kept; every table marks them):")
        for r, texts in flagged[:MAX_FLAGGED_LISTED]:
            i = r.get("extra_info") or {}
            lines.append(
                f"  - `{md_escape(str(i.get('task')))}` chain `{md_escape(str(i.get('chain')))}`, "
                f"`{md_escape(str(i.get('exit')))}`, bs {i.get('batch_size')}: {'; '.join(texts)}"
            )
        if len(flagged) > MAX_FLAGGED_LISTED:
            lines.append(f"  - … and {len(flagged) - MAX_FLAGGED_LISTED} more")
    return [*lines, ""]


def check_one_machine(results: dict[str, Any]) -> None:
    """A report shows the rows of one machine: speedups divide times, and times from two CPUs do not divide.
    Rows from before fingerprints carry none and count as their file's machine."""
    ids = {row_machine_id(b) for b in results.get("benchmarks") or []} - {None}
    if len(ids) > 1:
        raise UserError(
            f"the results mix rows measured on {len(ids)} machines ({', '.join(sorted(map(str, ids)))}); "
            "keep one machine's rows per results file"
        )


def _table(table: Table) -> list[str]:
    text = tabulate(table.rows, headers=table.headers, tablefmt="github", disable_numparse=True)
    lines = [text, ""]
    if table.footnotes:
        lines += [*(f"- {note}" for note in table.footnotes), ""]
    return lines


def _choice_sentence(v: Variant) -> str:
    """How the threshold was chosen, from whichever optional keys the harness recorded."""
    parts = [f"**{md_escape(v.exit)}** on chain {_code(v.chain)}"]
    if network_selection(v):
        parts.append(fmt_placement(v))  # network selection: the small network first, then the MainNet
    elif v.get("tap") is not None:
        parts.append(f"tap {_code(str(v.get('tap')))}")
    text = ", ".join(parts)
    threshold, target = as_float(v.get("threshold")), as_float(v.get("target_loss_pt"))
    source = v.get("threshold_source")
    if source == "never-exit":
        return text + ": threshold above 1, nothing exits (measures the SideNet's overhead)."
    if threshold is not None and source == "fixed":
        text += f": fixed threshold {fmt_threshold(threshold)} (given, not selected)"
    elif threshold is not None:
        text += f": threshold {fmt_threshold(threshold)} chosen on validation"
        if target is not None:
            text += f" for ≤ {target:g} pt accuracy loss"
    val_acc, val_rate = as_float(v.get("val_accuracy")), as_float(v.get("val_exit_rate"))
    if val_acc is not None and val_rate is not None:
        text += f" (validation: acc {100 * val_acc:.2f}%, exit rate {100 * val_rate:.1f}%)"
    return text + "."


def _operating_points(variants: list[Variant]) -> list[str]:
    lines = ["### Operating points", ""]
    exits = [v for v in variants if not v.is_mainnet]
    if not exits:
        return [*lines, "No early-exit rows for this task.", ""]
    for v in exits:
        lines.append(_choice_sentence(v))
        if v.get("threshold_source") == "never-exit":
            lines.append("")
            continue
        table = sweep_table(v, baseline_for(v, variants))
        lines += ["", *_table(table)] if table is not None else ["", f"Threshold sweep: {DASH} (not recorded)", ""]
        lines += [calibration_line(v), ""]
    return lines


def _images(
    task: str, specs: list[plots.PlotSpec], plot_dir_rel: str | None, kinds: tuple[str, ...] | None = None
) -> list[str]:
    """Image links for ``task``'s figures (of ``kinds`` only, when given)."""
    if plot_dir_rel is None:
        return []
    mine = [s for s in specs if s.task == task and (kinds is None or s.kind in kinds)]
    return [line for s in mine for line in (f"![{s.caption}]({quote(f'{plot_dir_rel}/{s.filename}')})", "")]


def _verdict_line(quad: Quad, sizes: list[int]) -> str:
    parts = [f"bs {bs}: {verdict(complementarity(quad, bs), complementarity_missing(quad, bs))}" for bs in sizes]
    return "**Verdict:** " + (" · ".join(parts) if parts else DASH)


def _complementarity(variants: list[Variant]) -> list[str]:
    """The headline per device: best chain sentence, then per chain a verdict and its four-row table."""
    quads = complementarity_quads(variants)
    if not quads:
        return []
    lines = ["### Complementarity: compressor chain × SideNet", ""]
    show_device = len(devices(variants)) > 1
    for device in devices(variants):
        mine = [q for q in quads if q.device == device]
        if not mine:
            continue
        sizes = batch_sizes([v for v in variants if v.device == device])
        if show_device:
            lines += [f"#### Device {_code(device)}", ""]
        bs = best_batch_size(sizes)
        lines += [best_sentence(mine, bs), ""]
        best = best_quad(mine, bs)
        ordered = [best.quad, *(q for q in mine if q is not best.quad)] if best is not None else mine
        notes: list[str] = []
        for quad in ordered:
            mark = f" — best at ≤{BEST_MAX_LOSS_PT:g} pt" if best is not None and quad is best.quad else ""
            lines += [f"{'#####' if show_device else '####'} {_code(quad.chain)} + SideNet{mark}", ""]
            lines += [_verdict_line(quad, sizes), ""]
            for line in (compression_line(quad), batch_composition_line(quad)):
                if line:
                    lines += [line, ""]
            table = complementarity_table(quad, sizes)
            lines += _table(Table(table.headers, table.rows, []))
            notes += [n for n in table.footnotes if n not in notes]
        lines += [*(f"- {note}" for note in notes), ""]
    return lines


def _exit_systems(
    task: str, variants: list[Variant], specs: list[plots.PlotSpec], plot_dir_rel: str | None
) -> list[str]:
    """Per device: every exit system at its operating point with the oracle rows, a reading computed from them (and
    each system family's paragraph where its systems ran: :func:`sidenet.report.readings.families`), the
    complementarity of each system with each compressed chain it ran on, and the accuracy-vs-FLOPs plot."""
    if not exit_variants(variants):
        return []
    lines = ["### Exit systems", ""]
    show_device = len(devices(variants)) > 1
    for device in devices(variants):
        mine = [v for v in variants if v.device == device]
        if not exit_variants(mine):
            continue
        sizes = batch_sizes(mine)
        if show_device:
            lines += [f"#### Device {_code(device)}", ""]
        lines += _table(exit_systems_table(mine, sizes))
        reading = exit_systems_reading(mine, sizes)
        if reading:
            lines += [reading, ""]
        for family in families():  # each paper's paragraph, where its systems ran (the family says when)
            paragraph = family.paragraph(mine, sizes) if family.paragraph is not None else ""
            if paragraph:
                lines += [paragraph, ""]
        comp = system_complementarity_table(mine, sizes)
        heading = "#####" if show_device else "####"
        if comp is not None:
            lines += [f"{heading} Complementarity per exit system", ""]
            lines += _table(comp)
        elif compressed_chains(mine):
            lines += [f"Complementarity per exit system: {DASH} (no exit system ran on a compressed chain).", ""]
        mine_specs = [s for s in specs if s.device in (None, device)]
        lines += _images(task, mine_specs, plot_dir_rel, kinds=("exit_systems",))
    return lines


def _profile_lines(variants: list[Variant]) -> list[str]:
    """What the task's recipe traded for time (the quick profile) and whether its fp32 MainNet met the stated
    floor: said first, so nobody reads a quick run's numbers as the full recipe's."""
    for v in variants:
        prof = v.get("task_profile")
        if not isinstance(prof, dict) or not (prof.get("trades") or prof.get("accuracy_floor")):
            continue
        text = f"**Profile `{md_escape(str(prof.get('profile') or DASH))}`**"
        if prof.get("trades"):
            text += f": {md_escape(str(prof['trades']))}."
        floor = as_float(prof.get("accuracy_floor"))
        if floor is not None:
            base = next((b for b in variants if b.chain == "none" and b.exit == "none"), None)
            acc = as_float(base.get("test_accuracy")) if base is not None else as_float(v.get("mainnet_test_accuracy"))
            shown = DASH if acc is None else f"{100 * acc:.2f}%"
            verdict = "met" if prof.get("floor_met") is True else f"{NOISY_MARK} below it"
            text += f" Its fp32 MainNet: {shown} on test against a stated floor of {100 * floor:.1f}%: {verdict}."
        return [text, ""]
    return []


def render_markdown(results: dict[str, Any], plot_dir_rel: str | None) -> str:
    """The whole report as Markdown; plot links point into ``plot_dir_rel`` (None: no plots).

    Per task: the complementarity headline and the Pareto plot (only when the task has compressed
    chains), the exit systems compared (when it has exit rows), the table of every row, the operating points,
    then the other figures.
    """
    check_one_machine(results)
    results = with_timing_flags(results)
    specs = plots.plan_plots(results) if plot_dir_rel is not None else []
    lines = [*_header(results), *_environment(results), *_timing_checks(results)]
    for task, variants in group_by_task(results).items():
        lines += [f"## Task {_code(task)}", ""]
        lines += _profile_lines(variants)
        headline = _complementarity(variants)
        if headline:
            lines += headline
            lines += _images(task, specs, plot_dir_rel, kinds=("pareto",))
        exits = _exit_systems(task, variants, specs, plot_dir_rel)
        lines += exits
        if headline or exits:
            lines += ["### All rows", ""]
        lines += _table(main_table(variants))
        lines += _operating_points(variants)
        later = tuple(k for k in plots.KINDS if k not in ("pareto", "exit_systems"))
        lines += _images(task, specs, plot_dir_rel, kinds=later)
    lines.append(NOTES)
    return "\n".join(lines).rstrip() + "\n"
