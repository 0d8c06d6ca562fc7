// `build` and `start` of the test application's frontend (run from frontend/ by npm).
'use strict';
const path = require('path');

const commands = {
  build: () => require(path.resolve('build.js')).build(),
  start: () => require(path.resolve('server.js')),
};

exports.run = (name) => {
  if (!commands[name]) {
    console.error(`usage: mediacms-test-scripts ${Object.keys(commands).join('|')}`);
    process.exit(2);
  }
  commands[name]();
};
