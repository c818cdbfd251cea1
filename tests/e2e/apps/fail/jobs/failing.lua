local api = require "devloop"
return function(data)
  if data.status then api.fail(data.status, data.msg) end
  if data.table then error({ status = data.table, message = data.msg }) end
  error({ code = 7 })
end
