-- throughput probe: when the enqueue began and when the Nth processor
-- returned (the same span bull-bench.js measures)
return { t0 = 0, target = 0, done = 0, t1 = 0 }
