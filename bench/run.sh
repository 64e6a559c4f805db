#!/usr/bin/env bash
# Tern vs RabbitMQ, side by side, with the same client (`tern bench`) and the same flags.
#
#   bench/run.sh [SECONDS]        # default 10 s per scenario
#
# Starts a release Tern on 5690 and Debian's RabbitMQ on 5680 (../shared/tools/rabbitmq-local.sh),
# then runs, against each broker one after the other:
#   (a) 1 producer / 1 consumer, 16 B transient, prefetch 1000, multi-ack 100
#   (b) the same with 1 KiB bodies
#   (c) fanout to 10 queues with 10 consumers
#   (d) scenario (a) at a fixed 50k msg/s, for latency
# Each line is one JSON summary from `tern bench --json` (msg/s in and out, latency percentiles,
# the bench's own CPU per message, the broker's CPU per message from /proc/PID/stat).
# Stops the Tern it started (by PID); leaves RabbitMQ running unless STOP_RABBIT=1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
tern_port=5690
rabbit_port=5680
shared=$(cd ../shared && pwd)

cargo build --release -p tern >/dev/null
bin=target/release/tern

bash "$shared/tools/rabbitmq-local.sh" start "$rabbit_port" >/dev/null
rabbit_pid=$(bash "$shared/tools/rabbitmq-local.sh" pid "$rabbit_port")

"$bin" server --amqp-port "$tern_port" --bind 127.0.0.1 >/tmp/tern-bench-server.log 2>&1 &
tern_pid=$!
trap 'kill "$tern_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  (echo >/dev/tcp/127.0.0.1/$tern_port) 2>/dev/null && break
  sleep 0.1
done

run() { # name broker port pid flags...
  local name=$1 broker=$2 port=$3 pid=$4
  shift 4
  printf '{"scenario":"%s","broker":"%s","result":' "$name" "$broker"
  # A run that fails after its summary (e.g. a slow queue delete) still reports it; its
  # stderr is kept next to the server log.
  { "$bin" bench --uri "amqp://guest:guest@127.0.0.1:$port/%2f" --broker-pid "$pid" \
      -z "$secs" --json "$@" 2>"/tmp/tern-bench-$name-$broker.err" || true; } |
    tail -n 1 | tr -d '\n'
  echo '}'
}

for broker in tern rabbitmq; do
  if [ "$broker" = tern ]; then port=$tern_port pid=$tern_pid; else port=$rabbit_port pid=$rabbit_pid; fi
  run a "$broker" "$port" "$pid" -x1 -y1 -s16 -q1000 --multi-ack 100
  run b "$broker" "$port" "$pid" -x1 -y1 -s1024 -q1000 --multi-ack 100
  run c "$broker" "$port" "$pid" -x1 -y10 -s16 -q1000 --multi-ack 100 --fanout 10
  run d "$broker" "$port" "$pid" -x1 -y1 -s16 -q1000 --multi-ack 100 -r 50000
done

if [ "${STOP_RABBIT:-0}" = 1 ]; then
  bash "$shared/tools/rabbitmq-local.sh" stop "$rabbit_port"
fi
