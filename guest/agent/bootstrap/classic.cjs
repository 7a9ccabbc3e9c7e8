'use strict';
// Runner for OpenFaaS's classic node template (exec mode).
//
// The agent runs it once per request as `node classic.cjs HANDLER`: it
// requires HANDLER (relative to the working directory, the code directory),
// reads the request body from stdin as text and calls the exported
// function (val, callback); the callback's result, or the returned promise's,
// is printed: objects and arrays as JSON, anything else as it is. An error
// is printed to stderr and the process exits 1 (the agent answers 500).

const path = require('node:path');

function isObject(v) {
  return v !== null && typeof v === 'object';
}

function main() {
  const file = path.resolve(process.cwd(), process.argv[2]);
  const mod = require(file);
  const name = process.env.FAAS_FUNCTION;
  const fn = [name && mod[name], mod, mod && mod.handle, mod && mod.default].find((c) => typeof c === 'function');
  if (!fn) {
    console.error(`classic: ${process.argv[2]} exports no function`);
    process.exit(1);
  }
  const chunks = [];
  process.stdin.on('data', (c) => chunks.push(c));
  process.stdin.on('end', () => {
    let called = false;
    const cb = (err, res) => {
      if (called) {
        return;
      }
      called = true;
      if (err) {
        console.error(err);
        process.exitCode = 1;
        return;
      }
      if (res === undefined || res === null) {
        return;
      }
      if (Array.isArray(res) || isObject(res)) {
        process.stdout.write(JSON.stringify(res) + '\n');
      } else {
        process.stdout.write(String(res));
      }
    };
    let result;
    try {
      result = fn(Buffer.concat(chunks).toString('utf8'), cb);
    } catch (err) {
      cb(err);
      return;
    }
    if (result && typeof result.then === 'function') {
      result.then((d) => cb(undefined, d), (e) => cb(e));
    }
  });
}

main();
