-- wrk: POST /api/batch with 20 getFeature operations (ids cycle over 10,000)
local n = 0
request = function()
  local ops = {}
  for i = 1, 20 do
    n = n % 10000 + 1
    ops[i] = string.format('{"id":%d,"type":"getFeature","params":{"id":"feat-%06d"}}', i, n)
  end
  return wrk.format("POST", "/api/batch", { ["Content-Type"] = "application/json" },
    '{"operations":[' .. table.concat(ops, ",") .. ']}')
end
