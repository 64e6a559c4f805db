#!/bin/bash
# Compare two tern builds on amqp-blast's scenario (a), alternating, 15 s each, a fresh data
# directory per run. Usage:
#   scripts/bench-hotpath.sh BASE_TERN HEAD_TERN [ROUNDS]
# with amqp-blast built as ../shared/tools/amqp-blast/README says (BLAST overrides its path).
set -u
base=$1; head=$2; rounds=${3:-3}
blast=${BLAST:-/tmp/amqp-blast-target/release/amqp-blast}
data=$(mktemp -d /tmp/tern-hotpath.XXXXXX)
for round in $(seq "$rounds"); do
  for build in base head; do
    bin=$base; [ "$build" = head ] && bin=$head
    rm -rf "$data" && mkdir -p "$data"
    "$bin" server --amqp-port 5731 --bind 127.0.0.1 --data-dir "$data" \
      --management-port 0 --prometheus-port 0 >"$data.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/5731) 2>/dev/null && break; sleep 0.1; done
    echo "== round $round $build"
    "$blast" --uri amqp://guest:guest@127.0.0.1:5731/%2f -x1 -y1 -s16 -q1000 --multi-ack 100 \
      -z15 --broker-pid "$pid" --drain 3 --cleanup 2>&1 | grep -E "^(cpu|RESULT)"
    kill "$pid"; wait "$pid" 2>/dev/null
  done
done
rm -rf "$data" "$data.log"
