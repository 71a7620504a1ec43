-- wrk script for bench/run: POSTs the compat body of POST /api/email to every target alike,
-- counts responses by status, and collects the "message_id" of every 202 so the run can check
-- afterwards that each one is in mailroom's database.
--
-- Environment: BENCH_TOKEN (the API token), BENCH_SUMMARY (file to write the JSON summary to),
-- BENCH_IDS (optional file to write the 202 message ids to, one a line).

local threads = {}

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format(
  '{"data": {"email_subject": "Benchmark", "email_sender": "John doe", '
    .. '"email_timestream": "1700000000", "email_content": "Load test message from bench/run."}, '
    .. '"token": "%s"}',
  os.getenv("BENCH_TOKEN") or ""
)

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  ids = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 202 then
    local id = string.match(body, '"message_id"%s*:%s*"([^"]+)"')
    if id then
      ids[#ids + 1] = id
    end
  end
end

function done(summary, latency, requests)
  local counts = {}
  local ids_file = os.getenv("BENCH_IDS")
  local out_ids = ids_file and io.open(ids_file, "a")
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
    if out_ids then
      for _, id in ipairs(thread:get("ids")) do
        out_ids:write(id, "\n")
      end
    end
  end
  if out_ids then
    out_ids:close()
  end
  local parts = {}
  for status, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  local e = summary.errors
  local json = string.format(
    '{"duration_us": %d, "requests": %d, "bytes": %d, "rps": %.1f, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"statuses": {%s}}',
    summary.duration, summary.requests, summary.bytes,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(parts, ", ")
  )
  io.write("bench-summary ", json, "\n")
  local path = os.getenv("BENCH_SUMMARY")
  if path then
    local f = assert(io.open(path, "w"))
    f:write(json, "\n")
    f:close()
  end
end
