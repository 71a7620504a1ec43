#!/usr/bin/env python3
"""The SMTP relay mailroom's tests deliver to: aiosmtpd on 127.0.0.1.

Three listeners:
  --port        plain SMTP, no authentication
  --tls-port    STARTTLS required, then AUTH PLAIN/LOGIN required
  --smtps-port  implicit TLS (SMTPS), then AUTH required

Every accepted message is written to --sink as NAME.eml (the raw message) and NAME.json
(envelope: mail_from, rcpt_tos, port, login). The .json is written last, so a reader that sees it
can read the .eml.

Replies are chosen by the recipient's local part:
  fail-CODE-TIMES.anything@domain   answer CODE to RCPT for the first TIMES attempts at this
                                    exact address (TIMES may be "always"), then accept
  quota-TIMES.anything@domain       answer as SES's SMTP endpoint does when the account's daily
                                    quota is used up ("454 Throttling failure: Daily message
                                    quota exceeded.") for the first TIMES attempts, then accept
  slow-MS.anything@domain           wait MS milliseconds before answering DATA
  until-EPOCHMS.anything@domain     answer DATA no earlier than EPOCHMS (Unix milliseconds): a
                                    relay that stalls every such session until one moment
"""

import argparse
import asyncio
import json
import os
import re
import signal
import ssl
import time
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

FAIL = re.compile(r"^fail-(\d{3})-(\d+|always)\.", re.IGNORECASE)
QUOTA = re.compile(r"^quota-(\d+)\.", re.IGNORECASE)
UNTIL = re.compile(r"(?:^|<)until-(\d+)", re.IGNORECASE)
SLOW = re.compile(r"(?:^|<)slow-(\d+)\.", re.IGNORECASE)


class Handler:
    def __init__(self, sink: str, port: int):
        self.sink = sink
        self.port = port
        self.attempts: dict[str, int] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        m = FAIL.match(address)
        if m:
            code, times = m.group(1), m.group(2)
            n = self.attempts.get(address.lower(), 0) + 1
            self.attempts[address.lower()] = n
            if times == "always" or n <= int(times):
                cls = code[0]
                return f"{code} {cls}.0.0 injected failure {n} for {address}"
        m = QUOTA.match(address)
        if m:
            n = self.attempts.get(address.lower(), 0) + 1
            self.attempts[address.lower()] = n
            if n <= int(m.group(1)):
                return "454 Throttling failure: Daily message quota exceeded."
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            m = SLOW.search(rcpt)
            if m:
                await asyncio.sleep(int(m.group(1)) / 1000)
            m = UNTIL.search(rcpt)
            if m:
                await asyncio.sleep(max(0.0, int(m.group(1)) / 1000 - time.time()))
        name = f"{time.time_ns()}-{uuid.uuid4().hex}"
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        with open(os.path.join(self.sink, name + ".eml"), "wb") as f:
            f.write(raw)
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "port": self.port,
            # The client's port: one per connection, so tests can see connection reuse.
            "peer_port": session.peer[1] if session.peer else None,
            "login": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
        }
        tmp = os.path.join(self.sink, "." + name + ".json.tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f)
        os.rename(tmp, os.path.join(self.sink, name + ".json"))
        return "250 2.0.0 queued as " + name


def authenticator(user: str, password: str):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return check


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls-port", type=int, required=True)
    p.add_argument("--smtps-port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--sink", required=True)
    a = p.parse_args()
    os.makedirs(a.sink, exist_ok=True)
    with open(a.password_file) as f:
        password = f.read().strip()

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(a.cert, a.key)
    auth = authenticator(a.user, password)

    controllers = [
        Controller(Handler(a.sink, a.port), hostname=a.host, port=a.port),
        Controller(
            Handler(a.sink, a.tls_port),
            hostname=a.host,
            port=a.tls_port,
            tls_context=tls,
            require_starttls=True,
            authenticator=auth,
            auth_required=True,
        ),
        Controller(
            Handler(a.sink, a.smtps_port),
            hostname=a.host,
            port=a.smtps_port,
            ssl_context=tls,
            server_hostname="localhost",
            authenticator=auth,
            auth_required=True,
            auth_require_tls=False,
        ),
    ]
    for c in controllers:
        c.start()
    print(f"SMTP relay ready on {a.host}: {a.port} plain, {a.tls_port} STARTTLS, {a.smtps_port} SMTPS", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    for c in controllers:
        c.stop()


if __name__ == "__main__":
    main()
