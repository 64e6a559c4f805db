#!/usr/bin/env python3
"""Record what a real RabbitMQ management HTTP API answers, as JSON fixtures.

Tern's tests compare the JSON shapes (field names and JSON types) of its own
management API against these recordings.

How to run it:

    # a reference RabbitMQ on AMQP port 5680 (shared/ sits beside the repo)
    ../shared/tools/rabbitmq-local.sh start 5680
    RABBITMQ_NODENAME=tern-ref-5680@localhost \
    RABBITMQ_ENABLED_PLUGINS_FILE=/tmp/rabbitmq-5680/enabled_plugins \
    RABBITMQ_MNESIA_BASE=/tmp/rabbitmq-5680/mnesia \
    RABBITMQ_LOG_BASE=/tmp/rabbitmq-5680/log \
      rabbitmq-plugins -n tern-ref-5680@localhost enable rabbitmq_management
    ss -ltnp | grep 15672            # the management API's port

    # pika is the only dependency beyond the standard library
    python3 -m venv /tmp/rmq-venv && /tmp/rmq-venv/bin/pip install pika
    /tmp/rmq-venv/bin/python scripts/record-rabbitmq-api.py \
        --api http://127.0.0.1:15672 --amqp-port 5680 \
        --out crates/tern-server/tests/fixtures/rabbitmq-api

    ../shared/tools/rabbitmq-local.sh stop 5680

It uses guest/guest, creates vhost `shapes`, user `shaper`, exchange
`shapes.x`, queues `shapes.q` and `shapes.consumed` (plus bindings), keeps an
AMQP connection with a consumer open while recording, and deletes all of it at
the end. Each GET answer is saved pretty-printed (indent 2, sorted keys) in
OUT/<path with / replaced by _>.json. Error recordings (and any endpoint that
did not answer 2xx) are wrapped as {"status": N, "body": ...}; an empty
body is saved as null.
"""

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pika

USER, PASSWORD = "guest", "guest"

# path -> file name (None: derived from the path)
GETS = [
    "/api/overview",
    "/api/nodes",
    "/api/whoami",
    "/api/connections",
    "/api/channels",
    "/api/consumers",
    "/api/exchanges",
    "/api/exchanges/%2F/shapes.x",
    "/api/queues",
    "/api/queues/%2F/shapes.q",
    "/api/bindings",
    "/api/bindings/%2F/e/shapes.x/q/shapes.q",
    "/api/exchanges/%2F/shapes.x/bindings/source",
    "/api/queues/%2F/shapes.q/bindings",
    "/api/vhosts",
    "/api/vhosts/shapes",
    "/api/users",
    "/api/users/shaper",
    "/api/permissions",
    "/api/topic-permissions",
    "/api/definitions",
    "/api/health/checks/alarms",
    "/api/health/checks/local-alarms",
    "/api/health/checks/virtual-hosts",
    "/api/health/checks/is-in-service",
    "/api/health/checks/port-listener/{amqp_port}",
]


class Api:
    def __init__(self, base):
        self.base = base.rstrip("/")

    def request(self, method, path, body=None, auth=(USER, PASSWORD)):
        """Returns (status, parsed JSON body or None). auth=None sends none."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def must(self, method, path, body=None):
        status, answer = self.request(method, path, body)
        if not 200 <= status < 300:
            raise SystemExit(f"{method} {path} -> {status}: {answer}")
        return answer


def file_name(path):
    return path.strip("/").replace("/", "_") + ".json"


def save(out, name, value):
    with open(os.path.join(out, name), "w") as f:
        json.dump(value, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    print("wrote", name)


def setup(api):
    api.must("PUT", "/api/vhosts/shapes", {})
    api.must("PUT", "/api/users/shaper", {"password": "shaper", "tags": "management"})
    for user in ("guest", "shaper"):
        api.must("PUT", f"/api/permissions/shapes/{user}",
                 {"configure": ".*", "write": ".*", "read": ".*"})
    api.must("PUT", "/api/topic-permissions/shapes/shaper",
             {"exchange": "amq.topic", "write": "^shapes\\.", "read": ".*"})
    api.must("PUT", "/api/exchanges/%2F/shapes.x",
             {"type": "topic", "durable": True, "auto_delete": False,
              "internal": False, "arguments": {}})
    api.must("PUT", "/api/queues/%2F/shapes.q",
             {"durable": True, "auto_delete": False,
              "arguments": {"x-max-length": 1000}})
    api.must("POST", "/api/bindings/%2F/e/shapes.x/q/shapes.q",
             {"routing_key": "a.#", "arguments": {}})
    api.must("POST", "/api/bindings/%2F/e/amq.topic/e/shapes.x",
             {"routing_key": "b", "arguments": {}})


def cleanup(api):
    for method, path in [
        ("DELETE", "/api/queues/%2F/shapes.q"),
        ("DELETE", "/api/queues/%2F/shapes.consumed"),
        ("DELETE", "/api/exchanges/%2F/shapes.x"),
        ("DELETE", "/api/users/shaper"),
        ("DELETE", "/api/vhosts/shapes"),
    ]:
        status, answer = api.request(method, path)
        if status not in (200, 204, 404):
            print(f"cleanup {method} {path} -> {status}: {answer}", file=sys.stderr)


def open_amqp(port):
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=port,
        credentials=pika.PlainCredentials(USER, PASSWORD),
        client_properties={"connection_name": "tern-shapes-recorder"},
        heartbeat=60)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_qos(prefetch_count=10)
    ch.queue_declare("shapes.consumed", durable=False, auto_delete=False)
    ch.basic_consume("shapes.consumed", lambda *a: None, auto_ack=False,
                     consumer_tag="shapes-consumer")
    for i in range(3):
        ch.basic_publish(
            exchange="shapes.x", routing_key="a.b", body=f"message {i}".encode(),
            properties=pika.BasicProperties(
                delivery_mode=2, content_type="text/plain",
                headers={"x-shape": "yes", "n": i}))
    return conn, ch


def wait_for_stats(api, conn):
    """Polls until the connection, channel and queue carry full details."""
    deadline = time.time() + 40
    while True:
        conn.process_data_events(time_limit=1)
        _, conns = api.request("GET", "/api/connections")
        _, chans = api.request("GET", "/api/channels")
        _, queue = api.request("GET", "/api/queues/%2F/shapes.q")
        _, consumers = api.request("GET", "/api/consumers")
        _, overview = api.request("GET", "/api/overview")
        ready = (
            isinstance(conns, list) and any("client_properties" in c and "recv_oct" in c for c in conns)
            and isinstance(chans, list) and any("message_stats" in c and "connection_details" in c for c in chans)
            and isinstance(queue, dict) and queue.get("messages_ready") == 3 and "message_stats" in queue
            and isinstance(consumers, list) and len(consumers) > 0
            and isinstance(overview, dict) and overview.get("message_stats")
        )
        if ready:
            return True
        if time.time() > deadline:
            print("warning: stats not complete after 40 s; recording anyway", file=sys.stderr)
            return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--api", default="http://127.0.0.1:15672")
    ap.add_argument("--amqp-port", type=int, default=5680)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    api = Api(args.api)

    cleanup(api)  # leftovers of an interrupted run
    setup(api)
    conn = None
    failed = []
    try:
        conn, _ch = open_amqp(args.amqp_port)
        wait_for_stats(api, conn)

        def get(path, name=None):
            conn.process_data_events(time_limit=0)
            status, answer = api.request("GET", path)
            if not 200 <= status < 300:
                failed.append((path, status))
                answer = {"status": status, "body": answer}
            save(args.out, name or file_name(path.split("?")[0]), answer)
            return answer

        overview = None
        for path in GETS:
            answer = get(path.format(amqp_port=args.amqp_port))
            if path == "/api/overview":
                overview = answer
        get("/api/queues?page=1&page_size=2", "api_queues_page.json")

        for path, body, name in [
            ("/api/queues/%2F/shapes.q/get",
             {"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000},
             "api_queues_get.json"),
            ("/api/exchanges/%2F/shapes.x/publish",
             {"properties": {}, "routing_key": "a.c", "payload": "hi", "payload_encoding": "string"},
             "api_exchanges_publish.json"),
        ]:
            status, answer = api.request("POST", path, body)
            if not 200 <= status < 300:
                failed.append((path, status))
                answer = {"status": status, "body": answer}
            save(args.out, name, answer)

        status, answer = api.request("GET", "/api/queues/%2F/nope")
        save(args.out, "api_error_404.json", {"status": status, "body": answer})
        # no credentials: RabbitMQ answers 401 with an empty body (saved as null)
        status, answer = api.request("GET", "/api/overview", auth=None)
        save(args.out, "api_error_401.json", {"status": status, "body": answer})
        # wrong credentials: 401 with a JSON error body
        status, answer = api.request("GET", "/api/overview", auth=(USER, "wrong"))
        save(args.out, "api_error_401_bad_credentials.json", {"status": status, "body": answer})

        with open(os.path.join(args.out, "VERSION.txt"), "w") as f:
            f.write(f"rabbitmq_version: {overview.get('rabbitmq_version')}\n")
            f.write(f"management_version: {overview.get('management_version')}\n")
            f.write(f"erlang_version: {overview.get('erlang_version')}\n")
            f.write(f"recorded_by: scripts/record-rabbitmq-api.py\n")
        print("wrote VERSION.txt")
    finally:
        if conn is not None and conn.is_open:
            conn.close()
        cleanup(api)
    for path, status in failed:
        print(f"non-2xx: {path} -> {status} (saved wrapped as {{status, body}})", file=sys.stderr)


if __name__ == "__main__":
    main()
