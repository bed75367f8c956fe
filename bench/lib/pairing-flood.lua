-- wrk script of bench/pairing-flood: POSTs junk (what a request sealed with a wrong PSK looks like: random bytes) to
-- /pairing and /pairing/token in turn, over keep-alive connections, as fast as the hub answers.
local paths = { "/pairing", "/pairing/token" }
local bodies = {}
local n = 0

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  for i = 1, 64 do
    local t = {}
    for j = 1, 100 + (i % 60) do t[j] = string.char(math.random(0, 255)) end
    bodies[i] = table.concat(t)
  end
end

function request()
  n = n + 1
  return wrk.format("POST", paths[n % 2 + 1], { ["Content-Type"] = "application/octet-stream" }, bodies[n % 64 + 1])
end
