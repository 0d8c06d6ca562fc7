// Build of the test application's frontend: concatenates src/*.js and src/*.css,
// strips comments and blank lines, writes dist/static/js/app.js and dist/static/css/app.css.
'use strict';
const fs = require('fs');
const path = require('path');

const ROOT = __dirname;

function loadEnv() {
  const env = {};
  const file = path.join(ROOT, '.env');
  if (fs.existsSync(file)) {
    for (const raw of fs.readFileSync(file, 'utf8').split(/\r?\n/)) {
      const line = raw.trim();
      if (!line || line.startsWith('#') || !line.includes('=')) continue;
      const i = line.indexOf('=');
      env[line.slice(0, i).trim()] = line.slice(i + 1).trim().replace(/^(['"])(.*)\1$/, '$2');
    }
  }
  return { ...env, ...process.env };
}

function minify(text, ext) {
  let out = text.replace(/\/\*[\s\S]*?\*\//g, '');
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !(ext === '.js' && l.startsWith('//')))
    .join('\n');
}

function build() {
  const env = loadEnv();
  const buildId = env.MEDIACMS_BUILD_ID || 'none';
  const srcDir = path.join(ROOT, 'src');
  const outputs = { '.js': 'js/app.js', '.css': 'css/app.css' };
  for (const [ext, rel] of Object.entries(outputs)) {
    const files = fs.readdirSync(srcDir).filter((f) => path.extname(f) === ext).sort();
    const body = files.map((f) => minify(fs.readFileSync(path.join(srcDir, f), 'utf8'), ext)).join('\n');
    const out = path.join(ROOT, 'dist', 'static', rel);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, `/*! mediacms-test-app build MEDIACMS_BUILD_ID=${buildId} */\n${body}\n`);
    console.log(`wrote ${path.relative(ROOT, out)} (${files.length} source files)`);
  }
}

module.exports = { build, loadEnv };

if (require.main === module) build();
