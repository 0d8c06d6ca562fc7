// Dev server of the test application's frontend: builds, then serves a page and
// dist/static/* on 0.0.0.0:PORT (default 8088; PORT from the environment or frontend/.env).
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');
const { build, loadEnv } = require('./build.js');

const env = loadEnv();
const port = parseInt(env.PORT || '8088', 10);
const staticDir = path.join(__dirname, 'dist', 'static');
const types = { '.js': 'text/javascript', '.css': 'text/css', '.html': 'text/html' };
const page = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>MediaCMS test app (frontend dev)</title>
<link rel="stylesheet" href="/static/css/app.css"></head>
<body><h1>MediaCMS test app (frontend dev)</h1><pre id="config"></pre>
<script src="/static/js/app.js"></script></body></html>\n`;

build();
http
  .createServer((req, res) => {
    let url;
    try {
      url = decodeURIComponent(req.url.split('?')[0]);
    } catch (e) {
      res.writeHead(400, { 'Content-Type': 'text/plain' });
      return res.end('bad request\n');
    }
    if (url === '/') {
      res.writeHead(200, { 'Content-Type': types['.html'] });
      return res.end(page);
    }
    const file = path.resolve(staticDir, '.' + url.replace(/^\/static/, ''));
    if (url.startsWith('/static/') && file.startsWith(staticDir + path.sep) && fs.existsSync(file)) {
      res.writeHead(200, { 'Content-Type': types[path.extname(file)] || 'application/octet-stream' });
      return fs.createReadStream(file).pipe(res);
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found\n');
  })
  .listen(port, '0.0.0.0', () => console.log(`frontend dev server on http://0.0.0.0:${port}/`));
