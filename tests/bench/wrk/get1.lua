-- wrk: GET /api/features/:id, ids cycling over 10,000 (the batch's operations one by one)
local n = 0
request = function()
  n = n % 10000 + 1
  return wrk.format("GET", string.format("/api/features/feat-%06d", n))
end
