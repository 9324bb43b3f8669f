-- wrk script: replay a file of requests, one per line: METHOD <TAB> PATH [<TAB> BODY].
-- Thread t of T sends lines t, t+T, t+2T, ... (no two threads send the same line) and
-- stops when its share runs out, so unique POST bodies are never sent twice; with
-- BENCH_WRAP=1 (reads, where repeating a request is harmless) it starts over instead.
-- Environment: BENCH_REQUESTS (the file), BENCH_THREADS, BENCH_DELAY_MS (optional:
-- each connection waits this long before each request, for a lower, steady rate).
-- done() prints one JSON object (latencies in microseconds) after the marker line.

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local wrap = os.getenv("BENCH_WRAP") == "1"
if delay_ms > 0 then
  function delay() return delay_ms end
end

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(os.getenv("BENCH_THREADS"))
  reqs = {}
  local i = 0
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    if i % nthreads == tid then
      local method, path, body = line:match("^(%u+)\t([^\t]+)\t?(.*)$")
      local headers = {}
      if body ~= nil and body ~= "" then
        headers["Content-Type"] = "application/json"
      else
        body = nil
      end
      table.insert(reqs, wrk.format(method, path, headers, body))
    end
    i = i + 1
  end
  pos = 0
  statuses = {}
  exhausted = 0
end

function request()
  pos = pos + 1
  if pos > #reqs then
    pos = 1
    if not wrap then
      exhausted = 1
      wrk.thread:stop()
    end
  end
  return reqs[pos]
end

function response(status, headers, body)
  local k = tostring(status)
  statuses[k] = (statuses[k] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  local ran_out = 0
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do merged[k] = (merged[k] or 0) + v end
    ran_out = ran_out + t:get("exhausted")
  end
  local parts = {}
  for k, v in pairs(merged) do table.insert(parts, string.format('"%s":%d', k, v)) end
  io.write("\n--- bench-json ---\n")
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d},' ..
    '"statuses":{%s},"threads_ran_out":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    table.concat(parts, ","), ran_out))
end
