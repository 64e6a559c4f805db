#!/usr/bin/env python3
"""Broker RSS per idle connection and per empty queue.

Usage: memory.py PID PORT [CONNECTIONS] [QUEUES]

Opens CONNECTIONS AMQP connections that finish the handshake (PLAIN guest/guest, vhost /) and
then sit idle, and declares QUEUES empty, non-durable queues over one connection. Prints the
broker's RSS (VmRSS of PID) before and after each step and the difference per item. Raw
sockets, so the measuring side does not depend on any client library.
"""
import socket
import struct
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def shortstr(s):
    b = s.encode()
    return struct.pack(">B", len(b)) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


def method(channel, class_id, method_id, args=b""):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


def read_frame(sock):
    head = b""
    while len(head) < 7:
        chunk = sock.recv(7 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    kind, channel, size = struct.unpack(">BHI", head)
    body = b""
    while len(body) < size + 1:
        chunk = sock.recv(size + 1 - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return kind, channel, body[:-1]


def expect(sock, class_id, method_id):
    while True:
        kind, _, payload = read_frame(sock)
        if kind == 8:
            continue
        got = struct.unpack(">HH", payload[:4])
        if got != (class_id, method_id):
            raise RuntimeError(f"expected {class_id}.{method_id}, got {got}: {payload!r}")
        return payload[4:]


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    expect(s, 10, 10)
    start_ok = struct.pack(">I", 0) + shortstr("PLAIN") + longstr(b"\x00guest\x00guest") + shortstr("en_US")
    s.sendall(method(0, 10, 11, start_ok))
    tune = expect(s, 10, 30)
    channel_max, frame_max, _heartbeat = struct.unpack(">HIH", tune[:8])
    s.sendall(method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
    s.sendall(method(0, 10, 40, shortstr("/") + shortstr("") + b"\x00"))
    expect(s, 10, 41)
    return s


def declare_queues(sock, count):
    sock.sendall(method(1, 20, 10, shortstr("")))
    expect(sock, 20, 11)
    batch = []
    for i in range(count):
        args = struct.pack(">H", 0) + shortstr(f"mem-q-{i}") + b"\x00" + struct.pack(">I", 0)
        batch.append(method(1, 50, 10, args))
        if len(batch) == 200:
            sock.sendall(b"".join(batch))
            for _ in batch:
                expect(sock, 50, 11)
            batch = []
    if batch:
        sock.sendall(b"".join(batch))
        for _ in batch:
            expect(sock, 50, 11)


def settle(pid):
    time.sleep(1.0)
    return rss_kib(pid)


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    conns = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    queues = int(sys.argv[4]) if len(sys.argv) > 4 else 5000
    base = settle(pid)
    socks = [connect(port) for _ in range(conns)]
    with_conns = settle(pid)
    per_conn = (with_conns - base) / conns
    print(f"idle connections: {conns}, RSS {base} -> {with_conns} KiB, {per_conn:.1f} KiB each")
    declare_queues(socks[0], queues)
    with_queues = settle(pid)
    per_queue = (with_queues - with_conns) / queues
    print(f"empty queues: {queues}, RSS {with_conns} -> {with_queues} KiB, {per_queue:.1f} KiB each")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
