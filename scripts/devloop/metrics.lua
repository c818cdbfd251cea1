-- devloop.metrics: api.metrics, app-defined counters, gauges and histograms
-- in the runtime's Prometheus registry (GET /metrics).
--   local hits = api.metrics.counter("app_hits_total", "Hits", { "kind" })
--   hits:inc({ "a" })          hits:inc({ "a" }, 5)
--   local lat = api.metrics.histogram("app_seconds", "Latency", nil, { 0.1, 1 })
--   lat:observe(nil, 0.25)
local metrics_core = require "devloop.metrics_core"

local error, setmetatable = error, setmetatable

local Metric = {}
Metric.__index = Metric
local update = metrics_core.update
local ADD, SET, OBSERVE = metrics_core.ADD, metrics_core.SET, metrics_core.OBSERVE
function Metric:inc(labels, v) update(ADD, self.id, labels, v or 1) end
function Metric:add(labels, v) update(ADD, self.id, labels, v) end
function Metric:set(labels, v) update(SET, self.id, labels, v) end
function Metric:observe(labels, v) update(OBSERVE, self.id, labels, v) end

local function define(kind)
  return function(name, help, labels, buckets)
    local id, err = metrics_core.define(kind, name, help, labels, buckets)
    if not id then error(err, 2) end
    return setmetatable({ id = id, name = name }, Metric)
  end
end

return {
  counter = define(metrics_core.COUNTER),
  gauge = define(metrics_core.GAUGE),
  histogram = define(metrics_core.HISTOGRAM),
  render = metrics_core.render,
}
