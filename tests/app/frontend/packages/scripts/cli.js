#!/usr/bin/env node
// Like upstream's mediacms-scripts, the commands live in dist/, which the package's
// "files" list leaves out: they are found only when npm links this package (npm 10's
// default), not when it packs a copy of it (Debian's npm 9.2 default).
'use strict';
require('./dist/commands.js').run(process.argv[2]);
