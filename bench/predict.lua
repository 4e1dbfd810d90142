-- wrk script for `vigil serve`: POST one digits input (8x8 pixels, 0..16) to the predict route
-- with the key in $VIGIL_KEY, count the requests wrk sends, and print latency percentiles.
--
--   VIGIL_KEY=vigil_... wrk -t2 -c64 -d10s -s bench/predict.lua http://127.0.0.1:7878
-- (the same script drives the FastAPI reference: its route is the same path)
local model = os.getenv("VIGIL_MODEL") or "digits-mlp"
wrk.method = "POST"
wrk.path = "/v1/models/" .. model .. "/predict"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("VIGIL_KEY") or "")
wrk.body = '{"inputs": [[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,'
  .. '0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]]}'

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  sent = 0
  non2xx = 0
  req = wrk.format()
end

function request()
  sent = sent + 1
  return req
end

function response(status, headers, body)
  if status ~= 200 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local total_sent, total_bad = 0, 0
  for _, t in ipairs(threads) do
    total_sent = total_sent + t:get("sent")
    total_bad = total_bad + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT sent=%d completed=%d non200=%d socket_errors=%d rps=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
    total_sent, summary.requests, total_bad, e.connect + e.read + e.write + e.timeout,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
