#!/bin/bash
# A 3-node Tern cluster against a 3-node RabbitMQ cluster on this machine, the same client
# (amqp-blast, ../shared/tools/amqp-blast) and the same scenarios for both:
#   forwarded  1 publisher on node 1, 1 consumer on node 2, the queue homed on node 3
#              (amqp-blast --uri / --consumer-uri / --setup-uri), 16-byte messages, prefetch
#              500, no confirms, DURATION s: published and consumed msg/s, latency percentiles
#   one node   the same with publisher, consumer and queue all on node 1
#   declare    DECLARE_CLIENTS clients (processes, pika) declaring distinct durable queues on
#              node 1 for DECLARE_SECS s: queue.declare/s (the queues are deleted afterwards;
#              that rate is printed too)
#   failover   Tern only, FAILOVER_REPS times: SIGKILL the metadata leader (found from the
#              nodes' "become leader" log lines; node 1 if none is found), time until a
#              queue.declare through a surviving node succeeds, restart the killed node
# plus the forwarded and one-node runs again at a fixed LAT_RATE (latency without a backlog; the
# unthrottled runs' latency is mostly time spent queued), and the CPU seconds the three broker
# processes used in each scenario. Tern nodes are killed by the PIDs this script started,
# RabbitMQ nodes stopped with rabbitmq-local.sh, also on failure or ^C.
#
# Usage (build a frozen copy first; the defaults are these locations):
#   git clone -q /work/main /tmp/bench-src
#   (cd /tmp/bench-src && CARGO_TARGET_DIR=/tmp/bench-target cargo build --release -p tern)
#   CARGO_TARGET_DIR=/tmp/amqp-blast-target cargo build --release \
#     --manifest-path /work/shared/tools/amqp-blast/Cargo.toml
#   scripts/bench-cluster.sh [TERN_BIN [AMQP_BLAST_BIN]]
# Environment: TERN, BLAST (binaries, if not given as arguments), BROKERS ("tern rabbitmq"),
# DURATION (20), DRAIN (5), LAT_RATE (5000 msg/s: forwarded and one node again at that fixed
# rate for LAT_SECS (10) s, for latency without a backlog; 0: skip), DECLARE_CLIENTS (10),
# DECLARE_SECS (10), FAILOVER_REPS (5), OUT (results and logs; default /tmp/bench-cluster.DATE),
# PYTHON (one with pika; default a venv in /tmp/bench-venv, made if missing), RMQ_LOCAL
# (rabbitmq-local.sh), TERN_PORT (5801: AMQP 5801-5803, management 15801-3, Prometheus
# 15851-3, cluster 26801-3), RMQ_PORT (5811: AMQP 5811-5813, Erlang distribution 25811-3).
# Takes about 4 minutes with the defaults.
# Output: a side-by-side table on stdout and in $OUT/summary.txt; raw output under $OUT.
set -u -o pipefail

TERN=${1:-${TERN:-/tmp/bench-target/release/tern}}
BLAST=${2:-${BLAST:-/tmp/amqp-blast-target/release/amqp-blast}}
BROKERS=${BROKERS:-"tern rabbitmq"}
DURATION=${DURATION:-20}
DRAIN=${DRAIN:-5}
LAT_RATE=${LAT_RATE:-5000}
LAT_SECS=${LAT_SECS:-10}
DECLARE_CLIENTS=${DECLARE_CLIENTS:-10}
DECLARE_SECS=${DECLARE_SECS:-10}
FAILOVER_REPS=${FAILOVER_REPS:-5}
OUT=${OUT:-/tmp/bench-cluster.$(date +%Y%m%d-%H%M%S)}
PYTHON=${PYTHON:-/tmp/bench-venv/bin/python}
RMQ_LOCAL=${RMQ_LOCAL:-/work/shared/tools/rabbitmq-local.sh}
TERN_PORT=${TERN_PORT:-5801}
RMQ_PORT=${RMQ_PORT:-5811}

HZ=$(getconf CLK_TCK)
declare -A R           # results: R[broker.metric]
declare -a TERN_PIDS=() # every tern process started (for the trap)
declare -a TPID=(x 0 0 0) TSTARTS=(x 0 0 0)
declare -a RMQ_STARTED=()
FAILED=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
note_failure() { log "FAILED: $*"; FAILED+=("$*"); }

cleanup() {
  local pid p left
  trap - EXIT INT TERM
  for pid in "${TERN_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill "$pid" 2>/dev/null
  done
  for pid in "${TERN_PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "tern pid $pid did not stop: SIGKILL"; kill -9 "$pid"; fi
    wait "$pid" 2>/dev/null
  done
  for p in "${RMQ_STARTED[@]}"; do "$RMQ_LOCAL" stop "$p"; done
  left=$(ss -ltnH 2>/dev/null | awk '{print $4}' | grep -cE ":($(ports_re))$")
  [ "$left" = 0 ] || log "warning: $left of this script's ports still listen after cleanup"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

ports_re() {
  local p=() i
  for i in 0 1 2; do
    p+=($((TERN_PORT + i)) $((TERN_PORT + 10000 + i)) $((TERN_PORT + 10050 + i)) \
      $((TERN_PORT + 21000 + i)) $((RMQ_PORT + i)) $((RMQ_PORT + 20000 + i)))
  done
  local IFS='|'; echo "${p[*]}"
}

# utime+stime of the given pids, in clock ticks (a gone pid counts 0).
ticks() {
  local sum=0 pid t
  for pid in "$@"; do
    t=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null) || t=0
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}
secs_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
field() { grep -o "$1=[^ ]*" <<<"$2" | head -n 1 | cut -d= -f2; }
uri() { echo "amqp://guest:guest@127.0.0.1:$1/%2f"; }

# ---------------------------------------------------------------------------------------------
# Checks and the pika helper.

[ -x "$TERN" ] || die "no tern binary at $TERN (see the usage in this script's header)"
[ -x "$BLAST" ] || die "no amqp-blast binary at $BLAST"
busy=$(ss -ltnH | awk '{print $4}' | grep -E ":($(ports_re))$" || true)
[ -z "$busy" ] || die "ports in use (another run?): $busy"
mkdir -p "$OUT" || die "cannot create $OUT"
if ! "$PYTHON" -c 'import pika' 2>/dev/null; then
  log "installing pika into /tmp/bench-venv"
  python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install -q pika >&2 \
    || die "cannot install pika"
  PYTHON=/tmp/bench-venv/bin/python
fi

cat >"$OUT/helper.py" <<'PY'
"""bench-cluster.sh's client for what amqp-blast does not do (pika, blocking).
  ready URI TIMEOUT                      until a durable queue can be declared and deleted
  declare URI CLIENTS SECS PREFIX        CLIENTS processes declare durable queues for SECS s
  failover PID URI PREFIX TIMEOUT        SIGKILL PID, then declare through URI until it works
"""
import multiprocessing as mp
import os
import signal
import sys
import time

import pika


def connect(uri):
    params = pika.URLParameters(uri)
    params.heartbeat = 0
    params.socket_timeout = 10
    params.blocked_connection_timeout = 30
    return pika.BlockingConnection(params)


def close(conn):
    try:
        if conn is not None and conn.is_open:
            conn.close()
    except Exception:
        pass


def ready(uri, timeout):
    deadline = time.monotonic() + float(timeout)
    last = None
    while time.monotonic() < deadline:
        conn = None
        try:
            conn = connect(uri)
            ch = conn.channel()
            name = "bench-ready-%d" % os.getpid()
            ch.queue_declare(name, durable=True)
            ch.queue_delete(name)
            close(conn)
            return 0
        except Exception as e:  # not listening yet, no metadata leader yet, ...
            last = e
            close(conn)
            time.sleep(0.2)
    print("not ready after %ss: %r" % (timeout, last), file=sys.stderr)
    return 1


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(round(p / 100.0 * (len(sorted_vals) - 1))))]


def declarer(uri, client, secs, prefix, go, out):
    conn = connect(uri)
    ch = conn.channel()
    names, lats, errors = [], [], []
    go.wait()
    start = time.monotonic()
    deadline = start + secs
    i = 0
    while time.monotonic() < deadline:
        name = "%s-%d-%d" % (prefix, client, i)
        i += 1
        t = time.monotonic()
        try:
            ch.queue_declare(name, durable=True)
            lats.append(time.monotonic() - t)
            names.append(name)
        except Exception as e:
            errors.append(repr(e)[:200])
            close(conn)
            conn = connect(uri)
            ch = conn.channel()
    end = time.monotonic()
    t = time.monotonic()
    deleted = 0
    for name in names:
        try:
            ch.queue_delete(name)
            deleted += 1
        except Exception as e:
            errors.append("delete: " + repr(e)[:200])
            close(conn)
            conn = connect(uri)
            ch = conn.channel()
    del_end = time.monotonic()
    close(conn)
    out.put((client, start, end, lats, errors, deleted, t, del_end))


def declare(uri, clients, secs, prefix):
    clients, secs = int(clients), float(secs)
    go, out = mp.Event(), mp.Queue()
    procs = [mp.Process(target=declarer, args=(uri, c, secs, prefix, go, out))
             for c in range(clients)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # every client connected, its channel open
    go.set()
    results = [out.get(timeout=secs + 600) for _ in procs]
    for p in procs:
        p.join()
    start, end = min(r[1] for r in results), max(r[2] for r in results)
    lats = sorted(l for r in results for l in r[3])
    errors = [e for r in results for e in r[4]]
    deleted = sum(r[5] for r in results)
    del_secs = max(r[7] for r in results) - min(r[6] for r in results)
    for e in sorted(set(errors))[:5]:
        print("declare error: %s (x%d)" % (e, errors.count(e)), file=sys.stderr)
    print("RESULT declares_total=%d declares_per_s=%.1f secs=%.2f lat_ms_p50=%.2f "
          "lat_ms_p99=%.2f lat_ms_max=%.2f errors=%d deleted=%d deletes_per_s=%.1f"
          % (len(lats), len(lats) / (end - start), end - start, pct(lats, 50) * 1e3,
             pct(lats, 99) * 1e3, (lats[-1] if lats else float("nan")) * 1e3, len(errors),
             deleted, deleted / del_secs if del_secs > 0 else 0.0))
    return 0 if not errors else 1


def failover(pid, uri, prefix, timeout):
    pid, timeout = int(pid), float(timeout)
    conn = connect(uri)
    ch = conn.channel()
    ch.queue_declare(prefix + "-before", durable=True)  # the cluster works before the kill
    ch.queue_delete(prefix + "-before")
    kill_wall = time.time()
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    attempts, errors = 0, []
    while time.monotonic() - t0 < timeout:
        attempts += 1
        name = "%s-%d" % (prefix, attempts)
        try:
            if conn is None or not conn.is_open:
                conn = connect(uri)
                ch = conn.channel()
            elif not ch.is_open:
                ch = conn.channel()
            ch.queue_declare(name, durable=True)
            ms = (time.monotonic() - t0) * 1e3
            ch.queue_delete(name)
            close(conn)
            break
        except Exception as e:
            errors.append(repr(e)[:200])
            close(conn)
            conn = None
            time.sleep(0.01)
    else:
        ms = None
    for e in sorted(set(errors))[:3]:
        print("failover error: %s (x%d)" % (e, errors.count(e)), file=sys.stderr)
    print("RESULT failover_ms=%s attempts=%d failed_attempts=%d kill_wall=%.6f"
          % ("timeout" if ms is None else "%.0f" % ms, attempts, len(errors), kill_wall))
    return 0 if ms is not None else 1


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.exit({"ready": ready, "declare": declare, "failover": failover}[cmd](*args))
PY

helper() { "$PYTHON" "$OUT/helper.py" "$@"; }

# ---------------------------------------------------------------------------------------------
# The scenarios, the same for both brokers. $1: broker; $2..$4: AMQP ports of nodes 1..3;
# then the broker processes' pids (for CPU seconds).

# One amqp-blast run: $1 broker, $2 scenario name, $3 publisher port, $4 consumer port,
# $5 queue (setup) port, $6 node whose API shows where the queue is, $7 seconds, $8 publish
# rate (0: as fast as possible), rest: pids.
blast() {
  local b=$1 scn=$2 pp=$3 cp=$4 sp=$5 home_node=$6 secs=$7 rate=$8; shift 8
  local out=$OUT/$b-$scn t0 c0 c1 rc res checks
  log "$b $scn: publish on :$pp, consume on :$cp, queue declared on :$sp, ${secs}s, rate $rate"
  (sleep 2; where_is_queue "$b" "$home_node" "bench-$scn" >"$out.home" 2>&1) &
  local probe=$!
  c0=$(ticks "$@"); t0=$(date +%s.%N)
  "$BLAST" --uri "$(uri "$pp")" --consumer-uri "$(uri "$cp")" --setup-uri "$(uri "$sp")" \
    -x 1 -y 1 --queues 1 -u "bench-$scn" -s 16 -z "$secs" -r "$rate" -q 500 --drain "$DRAIN" \
    --cleanup >"$out.out" 2>"$out.err"
  rc=$?
  c1=$(ticks "$@")
  wait "$probe"
  res=$(grep '^RESULT' "$out.out")
  checks=$(grep '^checks' "$out.err")
  R[$b.$scn.rc]=$rc
  R[$b.$scn.wall]=$(secs_since "$t0")
  R[$b.$scn.cpu]=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) / hz }')
  local f
  for f in published_per_s consumed_per_s published_total consumed_total lat_us_p50 lat_us_p95 \
    lat_us_p99 lat_us_max; do
    R[$b.$scn.$f]=$(field "$f" "$res")
  done
  for f in out_of_order gaps redelivered unconsumed_after_drain; do
    R[$b.$scn.$f]=$(field "$f" "$checks")
  done
  R[$b.$scn.home]=$(tr '\n' ' ' <"$out.home" | sed 's/ *$//')
  R[$b.$scn.toolcpu]=$(grep -o 'tool [0-9.]* s' "$out.err" | cut -d' ' -f2)
  echo "$res" | sed "s/^/$b $scn: /" >&2
  [ "$rc" = 0 ] || note_failure "$b $scn: amqp-blast exit $rc: $(grep -v '^t=' "$out.err" | tail -n 3 | tr '\n' ' ')"
}

# Which node a queue lives on, asked while amqp-blast runs (the check that --setup-uri homed it).
where_is_queue() {
  local b=$1 k=$2 q=$3
  if [ "$b" = tern ]; then
    curl -s -u guest:guest "http://127.0.0.1:$((TERN_PORT + 10000 + k - 1))/api/queues/%2f/$q" \
      | grep -o '"node":"[^"]*"' | head -n 1 | cut -d'"' -f4
  else
    rabbitmqctl -n "tern-ref-$((RMQ_PORT + k - 1))@localhost" -q list_queues name pid 2>/dev/null \
      | awk -v q="$q" '$1 == q { sub(/^</, "", $2); sub(/\..*/, "", $2); print $2 }'
  fi
}

# Every scenario but failover: $1 broker, $2 node 1's AMQP port, rest: the nodes' pids.
scenarios() {
  local b=$1 p=$2; shift 2
  blast "$b" forwarded "$p" $((p + 1)) $((p + 2)) 3 "$DURATION" 0 "$@"
  blast "$b" one-node "$p" "$p" "$p" 1 "$DURATION" 0 "$@"
  if [ "$LAT_RATE" -gt 0 ]; then
    blast "$b" forwarded-rate "$p" $((p + 1)) $((p + 2)) 3 "$LAT_SECS" "$LAT_RATE" "$@"
    blast "$b" one-node-rate "$p" "$p" "$p" 1 "$LAT_SECS" "$LAT_RATE" "$@"
  fi
  declare_rate "$b" "$p" "$@"
}

declare_rate() {
  local b=$1 port=$2; shift 2
  local out=$OUT/$b-declare c0 c1 t0 rc res f
  log "$b declare: $DECLARE_CLIENTS clients declaring durable queues on :$port for ${DECLARE_SECS}s"
  c0=$(ticks "$@"); t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$out.time" "$PYTHON" "$OUT/helper.py" declare "$(uri "$port")" \
    "$DECLARE_CLIENTS" "$DECLARE_SECS" "bench-decl" >"$out.out" 2>"$out.err"
  rc=$?
  R[$b.declare.toolcpu]=$(awk '{ printf "%.1f", $1 + $2 }' "$out.time")
  c1=$(ticks "$@")
  res=$(grep '^RESULT' "$out.out")
  for f in declares_total declares_per_s lat_ms_p50 lat_ms_p99 lat_ms_max errors deletes_per_s; do
    R[$b.declare.$f]=$(field "$f" "$res")
  done
  R[$b.declare.cpu]=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) / hz }')
  R[$b.declare.wall]=$(secs_since "$t0")
  echo "$res" | sed "s/^/$b declare: /" >&2
  [ "$rc" = 0 ] || note_failure "$b declare: exit $rc: $(tail -n 3 "$out.err" | tr '\n' ' ')"
}

# ---------------------------------------------------------------------------------------------
# Tern.

tern_log() { echo "$OUT/tern/n$1.${TSTARTS[$1]}.log"; }

tern_start() {
  local k=$1 peers i
  peers=$(for i in 0 1 2; do printf '127.0.0.1:%d,' $((TERN_PORT + 21000 + i)); done)
  TSTARTS[$k]=$((TSTARTS[k] + 1))
  "$TERN" server --bind 127.0.0.1 --amqp-port $((TERN_PORT + k - 1)) \
    --management-port $((TERN_PORT + 10000 + k - 1)) \
    --prometheus-port $((TERN_PORT + 10050 + k - 1)) --data-dir "$OUT/tern/n$k" \
    --node-name "n$k@localhost" --cluster-port $((TERN_PORT + 21000 + k - 1)) \
    --cluster-peers "${peers%,}" --cluster-secret-file "$OUT/tern/secret" --log-format json \
    --log-level 'info,openraft=warn,openraft::engine::handler::server_state_handler=info' \
    >/dev/null 2>"$(tern_log "$k")" &
  TPID[$k]=$!
  TERN_PIDS+=($!)
}

# Until node $1 logged "tern is ready" (60 s).
tern_wait_ready() {
  local k=$1
  for _ in $(seq 600); do
    grep -q '"message":"tern is ready"' "$(tern_log "$k")" && return 0
    kill -0 "${TPID[$k]}" 2>/dev/null || { tail -n 5 "$(tern_log "$k")" >&2; die "tern n$k exited"; }
    sleep 0.1
  done
  die "tern n$k not ready after 60 s"
}

# The metadata leader: the node whose last become/quit line is the latest "become leader".
tern_leader() {
  local k line ts best="" best_ts=""
  for k in 1 2 3; do
    kill -0 "${TPID[$k]}" 2>/dev/null || continue
    line=$(grep -hE '"message":"(become|quit) leader"' "$(tern_log "$k")" | tail -n 1)
    [[ $line == *'"become leader"'* ]] || continue
    ts=$(sed -E 's/.*"timestamp":"([^"]+)".*/\1/' <<<"$line")
    if [[ -z $best_ts || $ts > $best_ts ]]; then best=$k; best_ts=$ts; fi
  done
  echo "$best"
}

# The first "become leader" logged after epoch $1 (the kill): "nK +MS" (ms after the kill).
tern_leader_since() {
  local since=$1 k ts
  for k in 1 2 3; do
    grep -h '"message":"become leader"' "$(tern_log "$k")" \
      | sed -E 's/.*"timestamp":"([^"]+)".*/\1/' \
      | while read -r ts; do echo "$(date -d "$ts" +%s.%N) $k"; done
  done | awk -v s="$since" '$1 > s' | sort -n | head -n 1 \
    | awk -v s="$since" '{ printf "n%s +%.0f", $2, ($1 - s) * 1000 }'
}

run_tern() {
  local t0 k rep leader victim survivor res ms pids
  mkdir -p "$OUT/tern"
  head -c 32 /dev/urandom | base64 >"$OUT/tern/secret"
  chmod 600 "$OUT/tern/secret"
  log "tern: starting 3 nodes ($TERN)"
  t0=$(date +%s.%N)
  for k in 1 2 3; do tern_start "$k"; done
  for k in 1 2 3; do tern_wait_ready "$k"; done
  for k in 1 2 3; do
    helper ready "$(uri $((TERN_PORT + k - 1)))" 60 || die "tern n$k does not declare queues"
  done
  R[tern.startup]=$(secs_since "$t0")
  log "tern: cluster up in ${R[tern.startup]} s, leader n$(tern_leader)"
  "$TERN" ctl --data-dir "$OUT/tern/n1" --format json cluster_status >"$OUT/tern/cluster_status.json" 2>&1
  pids=("${TPID[1]}" "${TPID[2]}" "${TPID[3]}")
  scenarios tern "$TERN_PORT" "${pids[@]}"

  local all=() max=0
  for rep in $(seq "$FAILOVER_REPS"); do
    leader=$(tern_leader)
    if [ -z "$leader" ]; then
      log "tern failover $rep: no \"become leader\" line found; killing n1 (the seed)"
      leader=1; R[tern.failover.$rep.note]="leader unknown, killed n1"
    fi
    victim=${TPID[$leader]}
    survivor=$((leader % 3 + 1))
    log "tern failover $rep: SIGKILL leader n$leader (pid $victim), declaring through n$survivor"
    helper failover "$victim" "$(uri $((TERN_PORT + survivor - 1)))" "bench-fo-$rep" 60 \
      >"$OUT/tern-failover-$rep.out" 2>"$OUT/tern-failover-$rep.err"
    wait "$victim" 2>/dev/null
    res=$(grep '^RESULT' "$OUT/tern-failover-$rep.out")
    ms=$(field failover_ms "$res")
    R[tern.failover.$rep]=$ms
    R[tern.failover.$rep.killed]=n$leader
    R[tern.failover.$rep.probe]=n$survivor
    R[tern.failover.$rep.attempts]=$(field attempts "$res")
    R[tern.failover.$rep.elected]=$(tern_leader_since "$(field kill_wall "$res")")
    log "tern failover $rep: ${ms} ms (new leader, ms after the kill: ${R[tern.failover.$rep.elected]:-none logged})"
    if [[ $ms =~ ^[0-9]+$ ]]; then
      all+=("$ms"); [ "$ms" -gt "$max" ] && max=$ms
    else
      note_failure "tern failover $rep: no declare succeeded: $(tr '\n' ' ' <"$OUT/tern-failover-$rep.err")"
    fi
    tern_start "$leader"
    tern_wait_ready "$leader"
    for k in 1 2 3; do
      helper ready "$(uri $((TERN_PORT + k - 1)))" 60 || note_failure "tern n$k not serving after restart $rep"
    done
    sleep 2 # a restarted old leader may claim its old term for a moment
  done
  R[tern.failover.all]="${all[*]}"
  R[tern.failover.max]=$max
  tern_log_summary
}

tern_log_summary() {
  local f n_err n_warn
  {
    echo "== Tern node logs: ERROR and WARN lines (count, then the distinct messages, up to 4 each)"
    for f in "$OUT"/tern/n*.log; do
      n_err=$(grep -c '"level":"ERROR"' "$f")
      n_warn=$(grep -c '"level":"WARN"' "$f")
      echo "-- $(basename "$f"): $n_err ERROR, $n_warn WARN"
      for lvl in ERROR WARN; do
        grep "\"level\":\"$lvl\"" "$f" \
          | sed -E 's/"timestamp":"[^"]*",//' \
          | awk '!seen[$0]++' | head -n 4 | cut -c1-400
      done
    done
  } >"$OUT/tern-log-errors.txt"
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ.

rmqctl() { rabbitmqctl -n "tern-ref-$1@localhost" "${@:2}"; }

run_rabbitmq() {
  local t0 i p p1=$RMQ_PORT pids=()
  log "rabbitmq: starting 3 nodes on $RMQ_PORT..$((RMQ_PORT + 2))"
  t0=$(date +%s.%N)
  for i in 0 1 2; do
    p=$((RMQ_PORT + i))
    rm -rf "/tmp/rabbitmq-$p"   # this script's own data from an earlier run: a fresh node
    RMQ_STARTED+=("$p")
    "$RMQ_LOCAL" start "$p" >&2 || die "rabbitmq on $p did not start"
  done
  for i in 1 2; do
    p=$((RMQ_PORT + i))
    { rmqctl "$p" stop_app && rmqctl "$p" join_cluster "tern-ref-$p1@localhost" \
        && rmqctl "$p" start_app; } >"$OUT/rabbitmq-join-$p.log" 2>&1 \
      || die "rabbitmq $p could not join: $(tail -n 3 "$OUT/rabbitmq-join-$p.log")"
  done
  for i in 0 1 2; do rmqctl $((RMQ_PORT + i)) await_startup >/dev/null 2>&1; done
  rmqctl "$p1" cluster_status --formatter json >"$OUT/rabbitmq-cluster_status.json" 2>&1
  local running
  running=$(grep -o '"running_nodes":\[[^]]*\]' "$OUT/rabbitmq-cluster_status.json" | grep -o '@' | wc -l)
  [ "$running" = 3 ] || die "rabbitmq cluster has $running running nodes, not 3"
  for i in 0 1 2; do
    helper ready "$(uri $((RMQ_PORT + i)))" 60 || die "rabbitmq :$((RMQ_PORT + i)) does not declare queues"
    pids+=("$("$RMQ_LOCAL" pid $((RMQ_PORT + i)))")
  done
  R[rabbitmq.startup]=$(secs_since "$t0")
  log "rabbitmq: cluster of 3 up in ${R[rabbitmq.startup]} s (beam pids ${pids[*]}, $(rabbitmqctl version 2>/dev/null))"
  scenarios rabbitmq "$RMQ_PORT" "${pids[@]}"
  {
    echo "== RabbitMQ node logs: [error] and [warning] lines (count, then up to 4)"
    for i in 0 1 2; do
      for f in /tmp/rabbitmq-$((RMQ_PORT + i))/log/*.log; do
        [ -f "$f" ] || continue
        echo "-- $f: $(grep -c '\[error\]' "$f") error, $(grep -c '\[warning\]' "$f") warning"
        grep -E '\[(error|warning)\]' "$f" | head -n 4 | cut -c1-300
      done
    done
  } >"$OUT/rabbitmq-log-errors.txt"
}

# ---------------------------------------------------------------------------------------------

START=$(date +%s.%N)
{
  echo "bench-cluster.sh $(date -u +%FT%TZ) on $(nproc) cores; out: $OUT"
  echo "tern: $TERN ($("$TERN" --version 2>&1))$( [ -d /tmp/bench-src/.git ] && [[ $TERN == /tmp/bench-target/* ]] && echo ", built from /tmp/bench-src $(git -C /tmp/bench-src log -1 --format=%h)")"
  echo "amqp-blast: $BLAST; DURATION=$DURATION DRAIN=$DRAIN LAT_RATE=$LAT_RATE LAT_SECS=$LAT_SECS DECLARE_CLIENTS=$DECLARE_CLIENTS DECLARE_SECS=$DECLARE_SECS FAILOVER_REPS=$FAILOVER_REPS"
} | tee "$OUT/summary.txt" >&2

for b in $BROKERS; do
  case $b in
    tern) run_tern
      for pid in "${TPID[@]:1}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done ;;
    rabbitmq) run_rabbitmq
      for p in "${RMQ_STARTED[@]}"; do "$RMQ_LOCAL" stop "$p"; done; RMQ_STARTED=() ;;
    *) die "unknown broker $b" ;;
  esac
done

# ---------------------------------------------------------------------------------------------
# The table.

row() { # label, key suffix
  printf '%-44s %18s %18s\n' "$1" "${R[tern.$2]:--}" "${R[rabbitmq.$2]:--}"
}
{
  printf '\n%-44s %18s %18s\n' "3-node cluster, 2 cores" "Tern" "RabbitMQ"
  row "cluster start to serving (s)" startup
  for scn in forwarded one-node forwarded-rate one-node-rate; do
    case $scn in
      forwarded) echo "-- forwarded: publish n1, consume n2, queue on n3 (1p/1c/1q, 16 B, ${DURATION}s, q=500, no confirms, unthrottled)" ;;
      one-node) echo "-- one node: publish, consume, queue on n1 (1p/1c/1q, 16 B, ${DURATION}s, q=500, no confirms, unthrottled)" ;;
      forwarded-rate) [ "$LAT_RATE" -gt 0 ] || continue
        echo "-- forwarded at a fixed $LAT_RATE msg/s (latency without a backlog; ${LAT_SECS}s)" ;;
      one-node-rate) [ "$LAT_RATE" -gt 0 ] || continue
        echo "-- one node at a fixed $LAT_RATE msg/s (${LAT_SECS}s)" ;;
    esac
    row "  queue home (seen by its node)" "$scn.home"
    row "  published msg/s" "$scn.published_per_s"
    row "  consumed msg/s" "$scn.consumed_per_s"
    row "  latency p50 us" "$scn.lat_us_p50"
    row "  latency p95 us" "$scn.lat_us_p95"
    row "  latency p99 us" "$scn.lat_us_p99"
    row "  latency max us" "$scn.lat_us_max"
    row "  published total" "$scn.published_total"
    row "  consumed total (with drain)" "$scn.consumed_total"
    row "  unconsumed after drain" "$scn.unconsumed_after_drain"
    row "  out_of_order" "$scn.out_of_order"
    row "  gaps" "$scn.gaps"
    row "  broker CPU s (3 nodes)" "$scn.cpu"
    row "  amqp-blast CPU s" "$scn.toolcpu"
    row "  amqp-blast exit status" "$scn.rc"
  done
  echo "-- queue.declare: $DECLARE_CLIENTS clients on n1, distinct durable queues, ${DECLARE_SECS}s"
  row "  declares/s" declare.declares_per_s
  row "  declares total" declare.declares_total
  row "  declare latency p50 ms" declare.lat_ms_p50
  row "  declare latency p99 ms" declare.lat_ms_p99
  row "  declare latency max ms" declare.lat_ms_max
  row "  errors" declare.errors
  row "  broker CPU s (3 nodes, incl. deletes)" declare.cpu
  row "  client CPU s (pika, incl. deletes)" declare.toolcpu
  row "  (cleanup) deletes/s" declare.deletes_per_s
  if [[ " $BROKERS " == *" tern "* ]] && [ "$FAILOVER_REPS" -gt 0 ]; then
    echo "-- Tern failover: SIGKILL the metadata leader, until queue.declare succeeds on a survivor"
    for rep in $(seq "$FAILOVER_REPS"); do
      printf '  %-4s killed %-3s probe %-3s %8s ms  attempts %-3s new leader, ms after kill: %s%s\n' \
        "#$rep" "${R[tern.failover.$rep.killed]:--}" "${R[tern.failover.$rep.probe]:--}" \
        "${R[tern.failover.$rep]:--}" "${R[tern.failover.$rep.attempts]:--}" \
        "${R[tern.failover.$rep.elected]:--}" "${R[tern.failover.$rep.note]:+ (${R[tern.failover.$rep.note]})}"
    done
    echo "  max: ${R[tern.failover.max]:--} ms"
  fi
  echo
  for f in "$OUT/tern-log-errors.txt" "$OUT/rabbitmq-log-errors.txt"; do [ -f "$f" ] && cat "$f"; done
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo "== failures"; printf '  %s\n' "${FAILED[@]}"
  fi
  echo "total wall time: $(secs_since "$START") s"
} | tee -a "$OUT/summary.txt"
[ ${#FAILED[@]} -eq 0 ]
