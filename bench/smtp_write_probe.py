#!/usr/bin/env python3
"""How long one message takes on one SMTP connection to the local relay, by how the client
writes the end of DATA, for bench/run.

lettre (mailroom's SMTP client) writes the message body and the terminating "\\r\\n.\\r\\n" as two
writes and does not set TCP_NODELAY; smtplib writes them as one. With Nagle's algorithm on, the
second small write waits for the server to acknowledge the first, and the server, which answers
only after the terminator, delays that acknowledgement (up to 40 ms on Linux). This probe sends
--count messages over one raw connection in each of three ways and prints one JSON object with the
mean milliseconds per message:

  two_writes_nagle     body, then terminator, TCP_NODELAY off (lettre 0.11's pattern)
  one_write_nagle      body and terminator in one write, TCP_NODELAY off (smtplib's pattern)
  two_writes_nodelay   body, then terminator, TCP_NODELAY on
"""

import argparse
import json
import socket
import sys
import time

BODY = (
    b"From: Bench <bench@example.com>\r\nTo: rcpt@example.com\r\nSubject: write probe\r\n"
    b"\r\nBenchmark message from bench/run.\r\n"
)


def per_message_ms(port: int, count: int, split: bool, nodelay: bool) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        if nodelay:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        replies = s.makefile("rb")

        def reply() -> bytes:
            while True:
                line = replies.readline()
                if not line:
                    raise ConnectionError("the relay closed the connection")
                if line[3:4] != b"-":
                    return line

        reply()
        s.sendall(b"EHLO probe.example.com\r\n")
        reply()
        started = time.perf_counter()
        for _ in range(count):
            for command in (b"MAIL FROM:<bench@example.com>\r\n", b"RCPT TO:<rcpt@example.com>\r\n", b"DATA\r\n"):
                s.sendall(command)
                reply()
            if split:
                s.sendall(BODY)
                s.sendall(b"\r\n.\r\n")
            else:
                s.sendall(BODY + b"\r\n.\r\n")
            if not reply().startswith(b"250"):
                raise ConnectionError("the relay refused a message")
        elapsed = time.perf_counter() - started
        s.sendall(b"QUIT\r\n")
        return elapsed / count * 1000


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=100)
    a = p.parse_args()
    result = {
        "messages_each": a.count,
        "two_writes_nagle_ms": round(per_message_ms(a.port, a.count, True, False), 2),
        "one_write_nagle_ms": round(per_message_ms(a.port, a.count, False, False), 2),
        "two_writes_nodelay_ms": round(per_message_ms(a.port, a.count, True, True), 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
