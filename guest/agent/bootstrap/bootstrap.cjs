'use strict';
// http-mode bootstrap for Node.js handlers (core modules only).
//
// Loads the handler file named by FAAS_HANDLER (relative to FAAS_CODE_DIR),
// which must export a function (module.exports = async (req) => ...,
// module.exports.handle, or an ES module's default export or named `handle`;
// FAAS_FUNCTION names another export), then serves it on
// 127.0.0.1:FAAS_BOOTSTRAP_PORT by the contract FAAS_TEMPLATE names:
//
//   faasvm         async (req) => ..., our own (guest/agent/README.md)
//   openfaas-node  OpenFaaS node20/node22: async (event, context) with
//                  context.status(n).headers({...}).succeed(body) / .fail(err)
//   lambda         AWS Lambda: exports.handler = async (event, context) with an
//                  API Gateway HTTP API (payload 2.0) event

const http = require('node:http');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { randomUUID } = require('node:crypto');

// Response headers the bootstrap computes itself.
const HOP_HEADERS = new Set(['content-length', 'transfer-encoding', 'connection']);

async function loadHandler(codeDir, handler, name) {
  const file = path.resolve(codeDir, handler);
  let mod;
  if (file.endsWith('.mjs')) {
    mod = await import(pathToFileURL(file).href);
  } else {
    try {
      mod = require(file);
    } catch (err) {
      if (err && err.code === 'ERR_REQUIRE_ESM') {
        mod = await import(pathToFileURL(file).href);
      } else {
        throw err;
      }
    }
  }
  const candidates = name
    ? [mod && mod[name], mod && mod.default && mod.default[name]]
    : [mod, mod && mod.handle, mod && mod.default, mod && mod.default && mod.default.handle];
  const fn = candidates.find((c) => typeof c === 'function');
  if (!fn && name) {
    throw new Error(`${file} exports no function ${name}: use exports.${name} = async (event, context) => ...`);
  }
  if (!fn) {
    throw new Error(`${file} exports no function: use module.exports = async (req) => ... or module.exports.handle = ...`);
  }
  return fn;
}

function isBytes(v) {
  return Buffer.isBuffer(v) || v instanceof Uint8Array;
}

// encodeBody renders body as a Buffer, adding a content-type to headers (lower-cased keys) if it has none.
function encodeBody(body, headers) {
  if (body === undefined || body === null) {
    return Buffer.alloc(0);
  }
  let ctype;
  let data;
  if (typeof body === 'string') {
    ctype = 'text/plain; charset=utf-8';
    data = Buffer.from(body, 'utf8');
  } else if (isBytes(body)) {
    ctype = 'application/octet-stream';
    data = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  } else {
    ctype = 'application/json';
    const js = JSON.stringify(body);
    if (js === undefined) {
      throw new TypeError(`cannot encode a ${typeof body} as JSON`);
    }
    data = Buffer.from(js, 'utf8');
  }
  if (!('content-type' in headers)) {
    headers['content-type'] = ctype;
  }
  return data;
}

// toResponse maps a handler's return value to {status, headers, data}.
function toResponse(result) {
  let status = 200;
  let headers = {};
  let body = result;
  if (result !== null && typeof result === 'object' && !isBytes(result) && 'statusCode' in result) {
    status = Number(result.statusCode);
    headers = result.headers || {};
    body = result.body;
  }
  if (!Number.isInteger(status) || status < 100 || status > 599) {
    throw new RangeError(`status code ${result.statusCode} is not an integer between 100 and 599`);
  }
  const out = {};
  for (const [k, v] of Object.entries(headers)) {
    if (!HOP_HEADERS.has(k.toLowerCase())) {
      out[k.toLowerCase()] = v;
    }
  }
  return { status, headers: out, data: encodeBody(body, out) };
}

function isObject(v) {
  return v !== null && typeof v === 'object';
}

function splitURL(url) {
  const q = url.indexOf('?');
  const rawPath = q >= 0 ? url.slice(0, q) : url;
  let decoded = rawPath;
  try {
    decoded = decodeURIComponent(rawPath);
  } catch {
    // keep the raw path when it is not valid percent-encoding
  }
  return { rawPath, path: decoded, query: q >= 0 ? url.slice(q + 1) : '' };
}

// --- OpenFaaS node20 / node22 ------------------------------------------------

// parseQuery reads a query string as Express does for simple keys: a value
// per name, an array for a repeated one.
function parseQuery(raw) {
  const out = {};
  for (const [k, v] of new URLSearchParams(raw)) {
    if (!(k in out)) {
      out[k] = v;
    } else if (Array.isArray(out[k])) {
      out[k].push(v);
    } else {
      out[k] = [out[k], v];
    }
  }
  return out;
}

class BadRequest extends Error {}

// parseBody parses the body as the template's body-parser set-up does:
// RAW_BODY=true gives a Buffer; otherwise text/* is a string, JSON an
// object (or array), urlencoded an object; a request without a content
// type is text/plain; any other type gives {}.
function parseBody(headers, body) {
  if (process.env.RAW_BODY === 'true') {
    return body;
  }
  const ctype = String(headers['content-type'] || 'text/plain').split(';')[0].trim().toLowerCase();
  if (ctype.startsWith('text/')) {
    return body.toString('utf8');
  }
  if (ctype === 'application/json') {
    if (body.length === 0) {
      return {};
    }
    let v;
    try {
      v = JSON.parse(body.toString('utf8'));
    } catch (err) {
      throw new BadRequest(`invalid JSON body: ${err.message}`);
    }
    if (!isObject(v)) {
      throw new BadRequest('a JSON body must be an object or an array');
    }
    return v;
  }
  if (ctype === 'application/x-www-form-urlencoded') {
    return parseQuery(body.toString('utf8'));
  }
  return {};
}

class FunctionEvent {
  constructor(req, rawPath, query, body) {
    this.body = body;
    this.headers = req.headers;
    this.method = req.method;
    this.query = parseQuery(query);
    this.path = rawPath;
  }
}

class FunctionContext {
  constructor(cb) {
    this.statusCode = 200;
    this.statusSet = false;
    this.cb = cb;
    this.headerValues = {};
    this.cbCalled = 0;
  }

  status(statusCode) {
    if (!statusCode) {
      return this.statusCode;
    }
    this.statusCode = statusCode;
    this.statusSet = true;
    return this;
  }

  headers(value) {
    if (!value) {
      return this.headerValues;
    }
    this.headerValues = value;
    return this;
  }

  succeed(value) {
    this.cbCalled++;
    this.cb(undefined, value);
  }

  fail(value) {
    this.cbCalled++;
    this.cb(value, undefined);
  }
}

// openfaasNode serves fn by the node20 template's contract.
function openfaasNode(fn) {
  return (req, body) =>
    new Promise((resolve) => {
      const u = splitURL(req.url);
      if (!req.headers['content-type']) {
        req.headers['content-type'] = 'text/plain';
      }
      let parsed;
      try {
        parsed = parseBody(req.headers, body);
      } catch (err) {
        if (err instanceof BadRequest) {
          resolve({ status: 400, headers: { 'content-type': 'text/plain; charset=utf-8' }, data: Buffer.from(err.message) });
          return;
        }
        throw err;
      }
      let done = false;
      const cb = (err, result) => {
        if (done) {
          return;
        }
        done = true;
        const headers = {};
        for (const [k, v] of Object.entries(ctx.headers() || {})) {
          if (!HOP_HEADERS.has(k.toLowerCase())) {
            headers[k.toLowerCase()] = v;
          }
        }
        if (err) {
          console.error(err);
          const text = err && err.toString ? err.toString() : String(err);
          if (!('content-type' in headers)) {
            headers['content-type'] = 'text/html; charset=utf-8';
          }
          resolve({ status: ctx.statusSet ? ctx.status() : 500, headers, data: Buffer.from(text, 'utf8') });
          return;
        }
        let data;
        let ctype;
        if (result === undefined || result === null) {
          data = Buffer.alloc(0);
          ctype = 'text/html; charset=utf-8';
        } else if (isBytes(result)) {
          data = Buffer.from(result.buffer, result.byteOffset, result.byteLength);
          ctype = 'application/octet-stream';
        } else if (Array.isArray(result) || isObject(result)) {
          data = Buffer.from(JSON.stringify(result), 'utf8');
          ctype = 'application/json; charset=utf-8';
        } else {
          data = Buffer.from(String(result), 'utf8');
          ctype = 'text/html; charset=utf-8';
        }
        if (!('content-type' in headers)) {
          headers['content-type'] = ctype;
        }
        const status = Number(ctx.status());
        if (!Number.isInteger(status) || status < 100 || status > 599) {
          resolve(errorResponse(new RangeError(`status code ${ctx.status()} is not an integer between 100 and 599`)));
          return;
        }
        resolve({ status, headers, data });
      };
      const ctx = new FunctionContext(cb);
      Promise.resolve()
        .then(() => fn(new FunctionEvent(req, u.rawPath.length ? u.path : '/', u.query, parsed), ctx, cb))
        .then((res) => {
          if (!ctx.cbCalled) {
            ctx.succeed(res);
          }
        })
        .catch((e) => cb(e));
    });
}

// --- AWS Lambda (API Gateway HTTP API, payload format 2.0) -------------------

function lambdaEvent(req, body, requestId, now) {
  const u = splitURL(req.url);
  const headers = {};
  let cookie = '';
  for (const [k, v] of Object.entries(req.headers)) {
    if (k === 'cookie') {
      cookie = Array.isArray(v) ? v.join('; ') : v;
      continue;
    }
    headers[k] = Array.isArray(v) ? v.join(',') : String(v);
  }
  const host = headers.host || 'localhost';
  const d = new Date(now);
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const pad = (n) => String(n).padStart(2, '0');
  const event = {
    version: '2.0',
    routeKey: '$default',
    rawPath: u.rawPath,
    rawQueryString: u.query,
    headers,
    requestContext: {
      accountId: 'anonymous',
      apiId: 'faasvm',
      domainName: host,
      domainPrefix: host.split('.')[0],
      http: {
        method: req.method,
        path: u.path,
        protocol: 'HTTP/' + req.httpVersion,
        sourceIp: (headers['x-forwarded-for'] || '127.0.0.1').split(',')[0].trim(),
        userAgent: headers['user-agent'] || '',
      },
      requestId,
      routeKey: '$default',
      stage: '$default',
      time: `${pad(d.getUTCDate())}/${months[d.getUTCMonth()]}/${d.getUTCFullYear()}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`,
      timeEpoch: now,
    },
    isBase64Encoded: false,
  };
  if (cookie) {
    event.cookies = cookie.split(';').map((c) => c.trim()).filter((c) => c);
  }
  const params = {};
  for (const [k, v] of new URLSearchParams(u.query)) {
    params[k] = k in params ? `${params[k]},${v}` : v;
  }
  if (Object.keys(params).length > 0) {
    event.queryStringParameters = params;
  }
  if (body.length > 0) {
    const text = body.toString('utf8');
    if (Buffer.from(text, 'utf8').equals(body)) {
      event.body = text;
    } else {
      event.body = body.toString('base64');
      event.isBase64Encoded = true;
    }
  }
  return event;
}

function lambdaContext(requestId, deadline, settle) {
  const name = process.env.FAAS_FUNCTION_NAME || 'function';
  return {
    awsRequestId: requestId,
    functionName: name,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:${name}`,
    memoryLimitInMB: process.env.FAAS_MEMORY_MB || '0',
    logGroupName: `/aws/lambda/${name}`,
    logStreamName: `faasvm/${process.env.HOSTNAME || 'vm'}`,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: (err, res) => settle(err, res),
    succeed: (res) => settle(undefined, res),
    fail: (err) => settle(err || new Error('failed'), undefined),
  };
}

// lambdaResponse maps a result the way API Gateway does for payload 2.0: an
// object with statusCode is the response; anything else is a 200 JSON body
// (a string as it is).
function lambdaResponse(result) {
  if (isObject(result) && !isBytes(result) && 'statusCode' in result) {
    const status = Number(result.statusCode);
    if (!Number.isInteger(status) || status < 100 || status > 599) {
      throw new RangeError(`statusCode ${result.statusCode} is not an integer between 100 and 599`);
    }
    const headers = {};
    for (const [k, v] of Object.entries(result.headers || {})) {
      if (!HOP_HEADERS.has(k.toLowerCase())) {
        headers[k.toLowerCase()] = String(v);
      }
    }
    if (Array.isArray(result.cookies) && result.cookies.length > 0) {
      headers['set-cookie'] = result.cookies.map(String);
    }
    const body = result.body;
    let data;
    if (body === undefined || body === null) {
      data = Buffer.alloc(0);
    } else if (result.isBase64Encoded) {
      data = Buffer.from(String(body), 'base64');
    } else if (typeof body === 'string') {
      data = Buffer.from(body, 'utf8');
    } else {
      data = Buffer.from(JSON.stringify(body), 'utf8');
    }
    if (!('content-type' in headers)) {
      headers['content-type'] = isObject(body) ? 'application/json' : 'text/plain; charset=utf-8';
    }
    return { status, headers, data };
  }
  let data;
  if (result === undefined || result === null) {
    data = Buffer.alloc(0);
  } else if (typeof result === 'string') {
    data = Buffer.from(result, 'utf8');
  } else {
    data = Buffer.from(JSON.stringify(result), 'utf8');
  }
  return { status: 200, headers: { 'content-type': 'application/json' }, data };
}

function lambda(fn) {
  const timeout = Number(process.env.FAAS_TIMEOUT_MS) || 300000;
  const name = process.env.FAAS_FUNCTION_NAME || 'function';
  process.env.AWS_LAMBDA_FUNCTION_NAME = process.env.AWS_LAMBDA_FUNCTION_NAME || name;
  process.env.AWS_LAMBDA_FUNCTION_VERSION = process.env.AWS_LAMBDA_FUNCTION_VERSION || '$LATEST';
  process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE = process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE || process.env.FAAS_MEMORY_MB || '0';
  return (req, body, started) =>
    new Promise((resolve, reject) => {
      const requestId = String(req.headers['x-request-id'] || randomUUID());
      let settled = false;
      const settle = (err, res) => {
        if (settled) {
          return;
        }
        settled = true;
        if (err) {
          reject(err);
          return;
        }
        try {
          resolve(lambdaResponse(res));
        } catch (e) {
          reject(e);
        }
      };
      const ctx = lambdaContext(requestId, started + timeout, settle);
      const event = lambdaEvent(req, body, requestId, Date.now());
      Promise.resolve()
        .then(() => fn(event, ctx, settle))
        .then((res) => {
          // An async handler's result; a callback-style handler (three
          // parameters, not async) answers through the callback.
          if (!(fn.length >= 3 && fn.constructor.name !== 'AsyncFunction') || res !== undefined) {
            settle(undefined, res);
          }
        })
        .catch((e) => settle(e));
    });
}

function faasvm(fn) {
  return async (req, body) => toResponse(await fn(makeRequest(req, body)));
}

// contractFor returns the serve(req, body, started) of template ('' is
// faasvm); a faasvm function of two parameters is node20's.
function contractFor(template, fn) {
  switch (template || 'faasvm') {
    case 'faasvm':
      return fn.length === 2 ? openfaasNode(fn) : faasvm(fn);
    case 'openfaas-node':
      return openfaasNode(fn);
    case 'lambda':
      return lambda(fn);
    default:
      throw new Error(`unknown handler contract ${JSON.stringify(template)} (want faasvm, openfaas-node or lambda)`);
  }
}

function errorResponse(err) {
  return {
    status: 500,
    headers: { 'content-type': 'application/json' },
    data: Buffer.from(JSON.stringify({ error: errorText(err) }), 'utf8'),
  };
}

function errorText(err) {
  if (err instanceof Error) {
    return `${err.name}: ${err.message}`;
  }
  return String(err);
}

function makeRequest(req, body) {
  const q = req.url.indexOf('?');
  const rawPath = q >= 0 ? req.url.slice(0, q) : req.url;
  let decoded = rawPath;
  try {
    decoded = decodeURIComponent(rawPath);
  } catch {
    // keep the raw path when it is not valid percent-encoding
  }
  return {
    method: req.method,
    path: decoded,
    query: q >= 0 ? req.url.slice(q + 1) : '',
    headers: req.headers,
    body,
    text: body.toString('utf8'),
  };
}

async function main() {
  const port = Number(process.env.FAAS_BOOTSTRAP_PORT);
  const codeDir = process.env.FAAS_CODE_DIR || process.cwd();
  const handler = process.env.FAAS_HANDLER;
  const template = process.env.FAAS_TEMPLATE || 'faasvm';
  let serve;
  try {
    serve = contractFor(template, await loadHandler(codeDir, handler, process.env.FAAS_FUNCTION || ''));
  } catch (err) {
    console.error(err);
    console.error(`bootstrap: cannot load handler ${handler}: ${errorText(err)}`);
    process.exit(1);
  }

  const server = http.createServer((req, res) => {
    const started = Date.now();
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('error', () => res.destroy());
    req.on('end', async () => {
      let resp;
      try {
        resp = await serve(req, Buffer.concat(chunks), started);
      } catch (err) {
        console.error(err);
        resp = errorResponse(err);
      }
      resp.headers['content-length'] = resp.data.length;
      try {
        res.writeHead(resp.status, resp.headers);
        res.end(req.method === 'HEAD' ? undefined : resp.data);
      } catch (err) {
        // e.g. a header value Node refuses to send
        console.error(err);
        if (res.headersSent) {
          res.destroy();
          return;
        }
        const data = Buffer.from(JSON.stringify({ error: errorText(err) }), 'utf8');
        res.writeHead(500, { 'content-type': 'application/json', 'content-length': data.length });
        res.end(data);
      }
    });
  });
  // The agent's proxy owns the connections: it closes idle ones and bounds
  // each invocation, so Node's own timeouts are off.
  server.keepAliveTimeout = 0;
  server.requestTimeout = 0;
  server.listen(port, '127.0.0.1', () => {
    console.log(`bootstrap: serving ${handler} (${template} contract) on 127.0.0.1:${port}`);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
