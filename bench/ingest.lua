-- wrk script for bench/ingest.py: POSTs pre-signed Twilio webhooks, each body once.
-- BENCH_BODIES names a file of "<X-Twilio-Signature>\t<form body>" lines. Each wrk thread
-- takes every n-th line (n = threads, given after `--`), so no two requests share a body.
local signatures, bodies = {}, {}
for line in io.lines(os.getenv("BENCH_BODIES")) do
  local signature, body = line:match("^([^\t]*)\t(.*)$")
  signatures[#signatures + 1] = signature
  bodies[#bodies + 1] = body
end

local threads = {}
function setup(thread)
  thread:set("thread_index", #threads)
  threads[#threads + 1] = thread
end

local next_line, stride
function init(args)
  stride = tonumber(args[1])
  next_line = thread_index
end

function request()
  local i = (next_line % #bodies) + 1
  next_line = next_line + stride
  return wrk.format("POST", "/webhooks/twilio/sms", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Twilio-Signature"] = signatures[i],
  }, bodies[i])
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, "bodies": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.connect, errors.read, errors.write, errors.status, errors.timeout, #bodies))
end
