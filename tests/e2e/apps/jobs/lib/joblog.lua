-- shared by the processors of one worker: what ran, when
local M = { entries = {} }
local core = require "devloop.core"
function M.add(kind, id, extra)
  M.entries[#M.entries + 1] = { kind = kind, id = id, t = core.now(), extra = extra }
end
return M
