# shellcheck shell=bash
# Helpers shared by bench/run and bench/scale. Source it after scripts/servers.sh. The caller sets
# VALUES (the values.tsv file), CHECKS_FAILED=0, PIDS=(), WORK (a scratch directory), MAILROOM
# (the binary) and MAILROOM_ENV (settings every mailroom process of the run shares), and stops
# whatever is left in PIDS on exit.

# Records one measured value for bench/report.py.
record() { printf '%s\t%s\n' "$1" "$2" >>"$VALUES"; }

# A correctness check that failed: reported, and the run exits non-zero at the end.
check_failed() {
  log "CHECK FAILED: $*"
  record "check_failed" "$*"
  CHECKS_FAILED=$((CHECKS_FAILED + 1))
}

# Starts a command in the background with its output in a log file; sets LAST_PID.
start_bg() {
  local logfile=$1
  shift
  "$@" >"$logfile" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# Stops a process started by start_bg (SIGTERM, then waits for it).
stop_bg() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=()
  for i in "${PIDS[@]}"; do
    [ "$i" = "$pid" ] || kept+=("$i")
  done
  PIDS=("${kept[@]}")
}

# VmRSS and VmHWM of a process, in KiB: "rss hwm".
memory_of() {
  awk '/^VmRSS:/ {r=$2} /^VmHWM:/ {h=$2} END {print r, h}' "/proc/$1/status"
}

# User + system CPU time of a process, in clock ticks.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# Busy and idle CPU ticks of the whole machine so far: "BUSY IDLE".
machine_ticks() {
  awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat
}

# Share of the machine's CPU time that was busy over one second (nothing of ours runs meanwhile).
busy_pct() {
  local b1 i1 b2 i2
  read -r b1 i1 < <(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  sleep 1
  read -r b2 i2 < <(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  echo $((100 * (b2 - b1) / (b2 - b1 + i2 - i1 + 1)))
}

# Waits (60 s at most) for other work on the machine to settle before a phase, and records how
# busy it was, so a noisy number can be told from a slow one.
quiet_before() {
  local phase=$1 busy tries=0
  sync # so the previous phase's writeback does not compete with this one
  busy=$(busy_pct)
  while [ "$busy" -gt 25 ] && [ "$tries" -lt 59 ]; do
    tries=$((tries + 1))
    busy=$(busy_pct)
  done
  [ "$busy" -le 25 ] || log "The machine is ${busy}% busy with other work before $phase; measuring anyway."
  record "busy_before_$phase" "$busy"
}

# Preloads N messages with `mailroom send --file`: preload DATA_DIR N [VAR=VALUE...] (extra
# settings, e.g. DATABASE_URL=postgres://... to preload PostgreSQL). Prints the messages/s.
preload() {
  local dir=$1 n=$2 file=$WORK/messages-$2.jsonl started ended
  shift 2
  [ -f "$file" ] || python3 bench/messages.py --count "$n" >"$file"
  started=$(date +%s.%N)
  env "${MAILROOM_ENV[@]}" DATA_DIR="$dir" DELIVERY=none "$@" "$MAILROOM" send --file "$file" \
    >"$WORK/preload.log" 2>&1 || {
    cat "$WORK/preload.log" >&2
    return 1
  }
  ended=$(date +%s.%N)
  python3 -c "import sys; print(round($n / ($ended - $started), 1))"
}

# A process and all its descendants, one PID a line (uvicorn's workers, Celery's pool children).
tree_pids() {
  local child
  echo "$1"
  for child in $(pgrep -P "$1" 2>/dev/null); do
    tree_pids "$child"
  done
}

# User + system CPU time of a process and its living descendants, in clock ticks.
tree_cpu_ticks() {
  local pid total=0
  for pid in $(tree_pids "$1"); do
    total=$((total + $(cpu_ticks "$pid" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# Memory of the process trees rooted at the given PIDs, in KiB: "rss pss processes". RSS is summed
# over every process (shared pages counted in each, as `ps` adds them up); PSS shares them out.
tree_memory() {
  local root pid rss=0 pss=0 n=0 r p
  for root in "$@"; do
    for pid in $(tree_pids "$root"); do
      r=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
      p=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null) || p=0
      rss=$((rss + ${r:-0}))
      pss=$((pss + ${p:-0}))
      n=$((n + 1))
    done
  done
  echo "$rss $pss $n"
}

# Waits (30 s at most) until GET URL answers 2xx: a server that forks its workers after it
# listens (uvicorn --workers) is ready only then.
wait_http() {
  local url=$1 name=$2
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  log "$name did not answer GET $url"
  return 1
}

# Installs bench/baselines/requirements.txt into the user's Python when one of its pins is not
# satisfied (the baselines of bench/run: FastAPI, uvicorn, Celery, boto3).
ensure_baselines() {
  local req=bench/baselines/requirements.txt
  if ! python3 - "$req" <<'PY' 2>/dev/null; then
import re, sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if line:
        name, want = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line).groups()
        if version(name) != want:
            sys.exit(1)
PY
    log "Installing the Python baselines' packages ($req) from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check -r "$req"
  fi
}
