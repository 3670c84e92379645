#!/usr/bin/env bash
# One check of a machine with a GPU, start to finish, each step time-bounded, nothing left running:
#   1. install what the image lacks: redis-server (apt), .venv by bootstrap.sh --dev. When the image's Python
#      already has torch (a CUDA build), .venv is made with --system-site-packages so bootstrap keeps that
#      torch: it never replaces a CUDA torch with the CPU wheel;
#   2. torch's versions and the device it sees; `pytest -m gpu tests/gpu`;
#   3. `accel detect --json`; `accel bench bert --hardware cuda --size full --dtype bfloat16 --json`;
#   4. a pinned-worker fleet run of deploy/demo-models.txt on cuda: its own redis-server on a free loopback
#      port (password and fleet key made here), `accel writer`, `accel worker --hardware cuda`,
#      `accel run --broker ... --wait`, then `accel runs export --format optimum` of that run;
#   5. summary.json and summary.md in the output folder ($OUT if set, else ./gpu-check-out), beside each
#      step's stdout/stderr. Exit 0 when every step passed, 1 otherwise (the summary says which).
# Settings (environment):
#   ACCEL_GPU_CHECK_HARDWARE  cuda (default) or rocm; cpu runs the same steps on the CPU with tiny bf16-free
#                             settings and the tests' two models (how the suite exercises this script)
#   ACCEL_GPU_CHECK_MODELS    models of the fleet run (default @deploy/demo-models.txt; cpu: bert,gpt2)
#   ACCEL_GPU_CHECK_PYTHON    a Python that already has the project: skips step 1's .venv (e.g. the tests')
#   ACCEL_GPU_CHECK_STEP_S    time limit of each step in seconds (default 1200)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
HW=${ACCEL_GPU_CHECK_HARDWARE:-cuda}
case "$HW" in
  cuda | rocm) SIZE=full DTYPE=bfloat16 MODELS=${ACCEL_GPU_CHECK_MODELS:-@deploy/demo-models.txt}
    PYTEST_ARGS=(-m gpu tests/gpu -p no:cacheprovider) ;;
  cpu) SIZE=tiny DTYPE=float32 MODELS=${ACCEL_GPU_CHECK_MODELS:-bert,gpt2}
    PYTEST_ARGS=(-m gpu tests/gpu -p no:cacheprovider --collect-only -q) ;;  # no GPU: the gpu tests collect
  *) echo "gpu-check: ACCEL_GPU_CHECK_HARDWARE=$HW is invalid: use cuda, rocm or cpu" >&2; exit 2 ;;
esac
STEP_S=${ACCEL_GPU_CHECK_STEP_S:-1200}
case "$STEP_S" in '' | *[!0-9]*) echo "gpu-check: ACCEL_GPU_CHECK_STEP_S=$STEP_S is not a number of seconds" >&2; exit 2 ;; esac
OUT_DIR=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
STEPS="$OUT_DIR/steps.tsv"
: >"$STEPS"
PIDS=()

cleanup_and_wait() {
  # Every process this script started runs in its own session: end each group, TERM first, KILL after 30 s.
  local pid i alive
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
  for i in $(seq 1 60); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
  PIDS=()
}
trap cleanup_and_wait EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# step NAME CMD...: run CMD with the step time limit, stdout/stderr to NAME.out/NAME.err; record rc, ms.
step() {
  local name=$1 start rc
  shift
  echo "gpu-check: $name"
  start=$(date +%s%N)
  timeout --kill-after=15 "$STEP_S" "$@" >"$OUT_DIR/$name.out" 2>"$OUT_DIR/$name.err"
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( ($(date +%s%N) - start) / 1000000 ))" >>"$STEPS"
  [ "$rc" = 0 ] || echo "gpu-check: $name failed (exit $rc): see $OUT_DIR/$name.err" >&2
  return "$rc"
}

# background NAME CMD...: start CMD in its own session (so the trap ends its children too), logs to NAME.log.
background() {
  local name=$1
  shift
  setsid "$@" >"$OUT_DIR/$name.log" 2>&1 </dev/null &
  PIDS+=("$!")
}

install() {
  local sys_py=${PYTHON:-python3.11}
  command -v "$sys_py" >/dev/null 2>&1 || sys_py=python3
  if ! command -v redis-server >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server || return 1
  fi
  if [ ! -x .venv/bin/python ] && "$sys_py" -c 'import torch' >/dev/null 2>&1; then
    echo "the image's torch: $("$sys_py" -c 'import torch; print(torch.__version__, torch.version.cuda)')"
    "$sys_py" -m venv --system-site-packages .venv || return 1
  fi
  PYTHON=$sys_py bash deploy/scripts/bootstrap.sh --dev
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for() {  # wait_for SECONDS CMD...: until CMD succeeds
  local until=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$until" ] || return 1
    sleep 0.5
  done
}

start_fleet() {  # redis-server on a free loopback port with a new password, the writer, one pinned worker
  local port serve_port
  port=$(free_port) && serve_port=$(free_port) || return 1
  export ACCEL_BROKER_PASSWORD ACCEL_FLEET_KEY ACCEL_BROKER_URL="redis://127.0.0.1:$port/0"
  ACCEL_BROKER_PASSWORD=$("$PY" -c 'import secrets; print(secrets.token_hex(24))')
  ACCEL_FLEET_KEY=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
  export ACCEL_SERVE_PORT=$serve_port
  mkdir -p "$OUT_DIR/redis"
  background redis redis-server "$ROOT/deploy/redis.conf" --port "$port" --dir "$OUT_DIR/redis" \
    --requirepass "$ACCEL_BROKER_PASSWORD"
  if ! wait_for 30 redis-cli -p "$port" -a "$ACCEL_BROKER_PASSWORD" --no-auth-warning ping; then
    echo "gpu-check: redis-server did not answer on port $port: see $OUT_DIR/redis.log" >&2
    return 1
  fi
  background writer "$PY" -m scheduler writer
  background worker "$PY" -m scheduler worker --hardware "$HW"
}

PY=${ACCEL_GPU_CHECK_PYTHON:-$ROOT/.venv/bin/python}
export ACCEL_RESULTS_DB="$OUT_DIR/data/results.duckdb" ACCEL_REPORTS_DIR="$OUT_DIR/reports"
unset ACCEL_RESULTS_URL
failed=0
if [ -z "${ACCEL_GPU_CHECK_PYTHON:-}" ]; then
  export -f install
  step install bash -c install || failed=1
fi
step torch "$PY" -c 'import json, torch; print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
  "hip": getattr(torch.version, "hip", None), "cuda_available": torch.cuda.is_available(),
  "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))' || failed=1
step pytest_gpu "$PY" -m pytest "${PYTEST_ARGS[@]}" || failed=1
step detect "$PY" -m scheduler detect --json || failed=1
step bench "$PY" -m scheduler bench bert --hardware "$HW" --size "$SIZE" --dtype "$DTYPE" --json || failed=1
if start_fleet; then
  step fleet "$PY" -m scheduler run --phase gpu-check --models "$MODELS" --hardware "$HW" \
    --broker "$ACCEL_BROKER_URL" --wait --json || failed=1
else
  failed=1
fi
cleanup_and_wait  # the writer lets go of the results DB: what follows reads the file
if [ -s "$OUT_DIR/fleet.out" ]; then
  run_id=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["run_id"])' "$OUT_DIR/fleet.out")
  step export "$PY" -m scheduler runs export "$run_id" --format optimum --out "$OUT_DIR/optimum" --json || failed=1
fi
step summary "$PY" "$ROOT/deploy/scripts/gpu_check_summary.py" "$OUT_DIR" "$HW" || failed=1
echo "gpu-check: summary in $OUT_DIR/summary.md and summary.json"
exit "$failed"
