// The Express peer for tests/bench/bench-uploads.sh: the guide's upload route,
// multer with disk storage and a 50 MB limit, and the download route.
const express = require('express');
const multer = require('multer');
const path = require('path');
const crypto = require('crypto');
const dir = process.argv[3] || '/tmp/express-uploads';
const storage = multer.diskStorage({
  destination: dir,
  filename: (req, file, cb) => cb(null, crypto.randomBytes(12).toString('hex')),
});
const upload = multer({ storage, limits: { fileSize: 50 * 1024 * 1024 } });
const app = express();
const meta = new Map();
app.post('/api/files', upload.single('file'), (req, res) => {
  if (!req.file) return res.status(400).json({ error: 'Bad Request', message: 'no file' });
  meta.set(req.file.filename, req.file);
  res.status(201).json({ success: true, file: { id: req.file.filename, filename: req.file.originalname,
    contentType: req.file.mimetype, size: req.file.size } });
});
app.get('/api/files/:id', (req, res) => {
  const f = meta.get(req.params.id);
  if (!f) return res.status(404).json({ error: 'Not Found' });
  res.type(f.mimetype).sendFile(path.join(dir, req.params.id));
});
app.listen(+process.argv[2], '127.0.0.1');
