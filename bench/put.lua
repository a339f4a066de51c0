-- wrk script: etcd's POST /v3/kv/put (the JSON gateway) with a different key and value on every
-- request, both base64 as the gateway wants them.  Owned by bench/sweep.py.
--
--   wrk -t1 -c64 -d8s --latency -s bench/put.lua http://127.0.0.1:2379 -- <tag>
--
-- Keys are "sweep/<tag>/<thread>/<counter>", so runs given different tags never overwrite each
-- other's keys; the value is the counter.
local counter = 0
local thread_id = 0
local threads = 0
local tag = ""
local headers = { ["Content-Type"] = "application/json" }
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = { math.floor(n / 262144), math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
    for k = 1, 4 do
      chars[k] = alphabet:sub(chars[k] + 1, chars[k] + 1)
    end
    if not b then
      chars[3], chars[4] = "=", "="
    elseif not c then
      chars[4] = "="
    end
    out[#out + 1] = table.concat(chars)
  end
  return table.concat(out)
end

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function init(args)
  tag = args[1] or ""
end

function request()
  counter = counter + 1
  local key = b64("sweep/" .. tag .. "/" .. thread_id .. "/" .. counter)
  local body = '{"key":"' .. key .. '","value":"' .. b64(tostring(counter)) .. '"}'
  return wrk.format("POST", "/v3/kv/put", headers, body)
end
