"""The reference "API service" as a Python team builds it, for bench/run's ingest comparison.

FastAPI + pydantic behind uvicorn, the same compat contract as mailroom's `POST /api/email`
(docs: DESIGN.md, "HTTP interface"):

  body   {"data": {"email_subject", "email_sender", "email_timestream", "email_content"}, "token"}
  401    missing or wrong token (in the body, or `Authorization: Bearer`), checked before the fields
  400    {"error": {"code", "message", "field"}} naming the first missing, empty, mistyped or
         unknown-format field; a body that is not JSON is a 400 too
  202    {"message_id": ..., "status": "queued"} only after the message is published

Where it is published (BASELINE_SINK):
  sqlite  a local SQLite file (BASELINE_DB), WAL, synchronous=FULL, one INSERT committed per
          request before the 202: the embedded comparison for mailroom's default
  sqs     SendMessage to an SQS queue (BASELINE_QUEUE_URL) with boto3; AWS_ENDPOINT_URL points it
          at the same moto server mailroom uses, AWS_REGION names the region

The token is BASELINE_TOKEN. Run it the way such teams do, e.g.:

  uvicorn api:app --host 127.0.0.1 --port 8000 --workers 2 --no-access-log
"""

import hmac
import json
import os
import sqlite3
import threading
import time
import uuid
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

TOKEN = os.environ["BASELINE_TOKEN"]
SINK = os.environ.get("BASELINE_SINK", "sqlite")
MAX_SUBJECT_CHARS = 998
MAX_NAME_CHARS = 256


def header_safe(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain CR or LF (header injection)")
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


def valid_timestream(value: str) -> bool:
    """Unix epoch seconds (up to the year 9999), or an RFC 3339 time with an offset."""
    v = value.strip()
    if v.isascii() and v.isdigit():
        return int(v) <= 253_402_300_799
    try:
        d = datetime.fromisoformat(v)
    except ValueError:
        return False
    return d.tzinfo is not None and d.timestamp() >= 0


class CompatData(BaseModel):
    """The `data` member of the compat body: four JSON strings."""

    email_subject: StrictStr
    email_sender: StrictStr
    email_timestream: StrictStr
    email_content: StrictStr

    @field_validator("email_subject", "email_sender")
    @classmethod
    def text(cls, v: str, info) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        header_safe(v)
        limit = MAX_SUBJECT_CHARS if info.field_name == "email_subject" else MAX_NAME_CHARS
        if len(v) > limit:
            raise ValueError(f"is {len(v)} characters; the limit is {limit}")
        return v

    @field_validator("email_timestream")
    @classmethod
    def timestream(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        if not valid_timestream(v):
            raise ValueError('must be Unix epoch seconds as a string (e.g. "1700000000") or RFC 3339')
        return v

    @field_validator("email_content")
    @classmethod
    def content(cls, v: str) -> str:
        if not v:
            raise ValueError("must not be empty")
        if "\0" in v:
            raise ValueError("must not contain NUL")
        return v


class Envelope(BaseModel):
    """The whole body; `data` is validated after the token is checked."""

    model_config = ConfigDict(extra="ignore")
    token: StrictStr | None = None
    data: Any = None


def error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
        body["message"] = f"{field}: {message}"
    return JSONResponse({"error": body}, status_code=status)


def first_error(e: ValidationError, prefix: str) -> tuple[str, str]:
    err = e.errors()[0]
    field = ".".join(p for p in [prefix, *(str(p) for p in err["loc"])] if p) or "body"
    kind = err["type"]
    if kind == "missing":
        return field, "is required"
    if kind == "string_type":
        return field, "must be a string"
    if kind == "model_type" or kind == "dict_type":
        return field, "must be an object"
    msg = err["msg"]
    return field, msg.removeprefix("Value error, ")


# --- where a message is published ---------------------------------------------------------------

class SqliteSink:
    """One connection per worker process, its writes taken in turn (SQLite has one writer at a time;
    taking turns here spares the threads SQLite's busy-wait sleeps, which remain between the
    uvicorn worker processes). One transaction per message, committed before the 202."""

    def __init__(self, path: str):
        self.lock = threading.Lock()
        self.con = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, body TEXT NOT NULL, accepted_at REAL NOT NULL)"
        )

    def publish(self, message_id: str, body: str) -> None:
        with self.lock:
            self.con.execute("BEGIN IMMEDIATE")
            try:
                self.con.execute(
                    "INSERT INTO messages (id, body, accepted_at) VALUES (?, ?, ?)", (message_id, body, time.time())
                )
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise


class SqsSink:
    """boto3's SQS client is thread-safe: one per process, its pool as large as the thread pool."""

    def __init__(self, queue_url: str):
        import boto3
        from botocore.config import Config

        self.queue_url = queue_url
        self.client = boto3.client(
            "sqs",
            region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            config=Config(max_pool_connections=64, retries={"mode": "standard"}),
        )

    def publish(self, message_id: str, body: str) -> None:
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=body)


if SINK == "sqlite":
    sink = SqliteSink(os.environ["BASELINE_DB"])
elif SINK == "sqs":
    sink = SqsSink(os.environ["BASELINE_QUEUE_URL"])
else:
    raise SystemExit(f"BASELINE_SINK must be sqlite or sqs, not {SINK!r}")

app = FastAPI(title="baseline api", docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/api/email")
async def post_email(request: Request) -> JSONResponse:
    raw = await request.body()
    try:
        envelope = Envelope.model_validate_json(raw)
    except ValidationError as e:
        if any(err["type"].startswith("json") for err in e.errors()):
            return error(400, "invalid_json", f"the body is not valid JSON: {e.errors()[0]['msg']}")
        field, message = first_error(e, "")
        return error(400, "invalid_field", message, field)
    presented = envelope.token
    if presented is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        presented = value.strip() if scheme.lower() == "bearer" else None
    if not presented or not hmac.compare_digest(presented.encode(), TOKEN.encode()):
        return error(401, "unauthorized", "missing or invalid API token")
    if envelope.data is None:
        return error(400, "invalid_field", "is required", "data")
    try:
        data = CompatData.model_validate(envelope.data)
    except ValidationError as e:
        field, message = first_error(e, "data")
        return error(400, "invalid_field", message, field)
    message_id = str(uuid.uuid4())
    body = json.dumps({"id": message_id, "accepted_at": time.time(), "compat": data.model_dump()})
    await run_in_threadpool(sink.publish, message_id, body)
    return JSONResponse({"message_id": message_id, "status": "queued"}, status_code=202)
