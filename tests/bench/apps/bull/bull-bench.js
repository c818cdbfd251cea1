// Bull side of tests/bench/bench-jobs.sh: N jobs through a no-op processor or one
// doing one Redis GET, with the given concurrency; prints jobs/s.
const Queue = require('bull');
const Redis = require('ioredis');
const [url, kind, n, conc] = [process.argv[2], process.argv[3], +process.argv[4], +process.argv[5]];
(async () => {
  const q = new Queue('bench-' + kind + '-' + Date.now(), url);
  const r = new Redis(url);
  let done = 0, t0 = 0;
  const finished = new Promise((resolve) => {
    q.process(conc, async () => {
      if (kind === 'rget') await r.get('bench:key');
      if (++done === n) setImmediate(resolve);
      return true;
    });
  });
  const jobs = [];
  for (let i = 0; i < n; i++) jobs.push({ data: {}, opts: { removeOnComplete: true, attempts: 1 } });
  t0 = Date.now();
  for (let i = 0; i < n; i += 1000) await q.addBulk(jobs.slice(i, i + 1000));
  await finished;
  const secs = (Date.now() - t0) / 1000;
  console.log(JSON.stringify({ kind, n, jobs_per_s: Math.round(n / secs) }));
  // latency at idle: one job at a time
  const lats = [];
  const lq = new Queue('bench-lat-' + Date.now(), url);
  let resolveOne;
  lq.process(1, async (job) => { lats.push(Date.now() - job.data.t); resolveOne(); return true; });
  if (kind === 'noop') {
    for (let i = 0; i < 200; i++) {
      const p = new Promise((res) => { resolveOne = res; });
      await lq.add({ t: Date.now() }, { removeOnComplete: true });
      await p;
      await new Promise((res) => setTimeout(res, 5));
    }
    lats.sort((a, b) => a - b);
    console.log(JSON.stringify({ latency_ms_median: lats[100], latency_ms_p99: lats[198] }));
  }
  await q.close(); await lq.close(); r.disconnect();
  process.exit(0);
})();
