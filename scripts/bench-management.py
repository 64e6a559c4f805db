#!/usr/bin/env python3
"""Time the management API of a broker (Tern or RabbitMQ) at a scale operators meet.

    scripts/bench-management.py --api http://127.0.0.1:15672 [--metrics http://127.0.0.1:15692/metrics]

In a vhost of its own (`mgmt-bench`, deleted at the end) it imports a definitions file of
1,000 exchanges, 2,000 durable queues and 2,000 bindings with one POST /api/definitions, then
times GET /api/queues (every queue), GET /api/queues?page=1&page_size=100, GET /api/overview,
GET /api/definitions and, when given, a Prometheus scrape: the median of --runs runs each.
Python's standard library only; guest/guest unless --user / --password.
"""

import argparse
import base64
import json
import statistics
import time
import urllib.request

VHOST = "mgmt-bench"


def call(args, method, path, body=None, url=None):
    req = urllib.request.Request(url or args.api + path, method=method)
    token = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, data, timeout=600) as resp:
        return resp.status, resp.read()


def definitions(exchanges, queues):
    xs = [{"name": f"x{i}", "vhost": VHOST, "type": "topic", "durable": True,
           "auto_delete": False, "internal": False, "arguments": {}} for i in range(exchanges)]
    qs = [{"name": f"q{i}", "vhost": VHOST, "durable": True, "auto_delete": False,
           "arguments": {}} for i in range(queues)]
    bs = [{"source": f"x{i % exchanges}", "vhost": VHOST, "destination": f"q{i}",
           "destination_type": "queue", "routing_key": f"k.{i}.#", "arguments": {}}
          for i in range(queues)]
    perms = [{"user": "guest", "vhost": VHOST, "configure": ".*", "write": ".*", "read": ".*"}]
    return {"vhosts": [{"name": VHOST}], "permissions": perms,
            "exchanges": xs, "queues": qs, "bindings": bs}


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_ms(args, fn):
    runs = [timed(fn)[0] for _ in range(args.runs)]
    return statistics.median(runs) * 1000


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--api", required=True, help="the management API's base URL")
    p.add_argument("--metrics", help="a Prometheus /metrics URL to time too")
    p.add_argument("--user", default="guest")
    p.add_argument("--password", default="guest")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    defs = definitions(1000, 2000)
    took, _ = timed(lambda: call(args, "POST", "/api/definitions", defs))
    print(f"import 5002 objects (POST /api/definitions): {took * 1000:.0f} ms")
    try:
        size = len(call(args, "GET", "/api/queues")[1])
        ms = median_ms(args, lambda: call(args, "GET", "/api/queues"))
        print(f"GET /api/queues (2000+ queues, {size} bytes): {ms:.1f} ms")
        page = "/api/queues?page=1&page_size=100"
        print(f"GET {page}: {median_ms(args, lambda: call(args, 'GET', page)):.1f} ms")
        ms = median_ms(args, lambda: call(args, "GET", "/api/overview"))
        print(f"GET /api/overview: {ms:.1f} ms")
        ms = median_ms(args, lambda: call(args, "GET", "/api/definitions"))
        print(f"GET /api/definitions: {ms:.1f} ms")
        if args.metrics:
            ms = median_ms(args, lambda: call(args, "GET", "", url=args.metrics))
            print(f"GET {args.metrics}: {ms:.1f} ms")
    finally:
        call(args, "DELETE", f"/api/vhosts/{VHOST}")


if __name__ == "__main__":
    main()
