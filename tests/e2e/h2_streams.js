// Node's http2 client: N concurrent streams on one connection, every body
// checked. Usage: node h2_streams.js URL N [--insecure]
// Prints "ok N streams on one session" or exits 1 with what went wrong.
"use strict";
const http2 = require("http2");

const [url, nArg] = process.argv.slice(2);
const n = Number(nArg || 100);
const session = http2.connect(url, { rejectUnauthorized: false });
let sessions = 0;
session.on("connect", () => { sessions++; });
session.on("error", (e) => { console.error("session error:", e.message); process.exit(1); });

function one(i) {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":path": `/query?i=${i}&pad=${"x".repeat(i)}` });
    let status = 0;
    const chunks = [];
    req.on("response", (h) => { status = h[":status"]; });
    req.on("data", (d) => chunks.push(d));
    req.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString());
      if (status !== 200 || body.i !== String(i) || body.pad.length !== i)
        reject(new Error(`stream ${i}: status ${status} body ${JSON.stringify(body)}`));
      else resolve();
    });
    req.on("error", reject);
    req.end();
  });
}

const started = [];
for (let i = 0; i < n; i++) started.push(one(i));
Promise.all(started).then(() => {
  console.log(`ok ${n} streams on ${sessions} session`);
  session.close();
}, (e) => { console.error(e.message); process.exit(1); });
