-- wrk script: GET /propose/<value> with a different value on every request.
-- Values are (thread id, counter) packed into one 64-bit integer, so they never repeat.
local counter = 0
local thread_id = 0
local threads = 0

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function request()
  counter = counter + 1
  return wrk.format("GET", "/propose/" .. (thread_id * 1000000000 + counter))
end
