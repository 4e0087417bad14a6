'use strict';
/*
 * faasd's Node runtime: serves a function deployed from source. Node's standard library only (18+).
 *
 * faasd lays this file into /faas/runtime of a runtime image, and the function's code into
 * /faas/code. The entry file (FAAS_ENTRY, relative to the code dir) is written in one of two styles:
 *
 *     module.exports = (event, context) => ({ sum: event.a + event.b });  // a module: the function
 *     export default async (event, context) => ({ sum: event.a + event.b }); // (.mjs, or "type": "module")
 *                                              // is called per request; top-level code runs once
 *
 *     return { sum: event.a + event.b };       // a script body: the whole file runs per request,
 *                                              // with `event` and `context` in scope (await allowed)
 *
 * A module's function is, in this order: module.exports itself, its export named FAAS_HANDLER
 * (default "handler"), its default export, or a top-level `function handler(event)` (GraalFaaS).
 * `event` is the request's JSON body (its text when it is not JSON; the query string as an object
 * when there is no body); `context` has requestId, function, version, deadlineMs, remainingMs(),
 * method, path and headers. The return value is the response: JSON for objects, arrays, numbers,
 * booleans and null, text for a string, application/octet-stream for a Buffer or Uint8Array, and
 * {statusCode, headers, body} sets those. A throw becomes a 500 {"error", "request_id"}, its stack
 * goes to the log. console.log goes to the log (stdout), never into the response. An async
 * generator (or generator) function, or a request with `Accept: text/event-stream`, streams
 * Server-Sent Events: each item it yields and, while it streams, each line it logs, then
 * `event: result` with its return value (or `event: error`).
 *
 *     node runtime.js           serve the connections faasd hands over on Node's IPC channel
 *     node runtime.js --check   load the code and print {"ok": ...} as JSON (faasd runs it at deploy)
 *     node runtime.js --compile DIR   check that this node can run the wrapper (when a runtime is added)
 *     node runtime.js --once    call the code once with /faas/io/input.json (faas run)
 *     node runtime.js --once --stream   the same, and each item it yields and line it logs as
 *                               {"event": "message", "data": ...} on stdout as it comes (faas run --stream)
 *
 * Connections come over the IPC channel faasd opens as fd 3 (NODE_CHANNEL_FD): this process says
 * {"faas": "ready"}, and each connection arrives as a message whose handle is the client's socket
 * and whose body is the handoff metadata (docs/handler-protocol.md, the node-ipc variant).
 */

const fs = require('fs');
const http = require('http');
const path = require('path');
const util = require('util');
const vm = require('vm');
const Module = require('module');
const { pathToFileURL } = require('url');

const CODE_DIR = process.env.FAAS_CODE_DIR || '/faas/code';
const IO_DIR = process.env.FAAS_IO_DIR || '/faas/io';
const MAX_CAPTURED = 256 * 1024; // of what a run prints, the last bytes come back
const MAX_BODY = 16 * 1024 * 1024; // a request body is read whole, into memory
const DEADLINE_MARGIN_MS = 500; // an idle kept-alive connection closes this long before the deadline
const SHAPE_KEYS = new Set(['statusCode', 'headers', 'body', 'isBase64Encoded']);
// A script body is compiled as this function; its own first line is the source's line 1.
const SCRIPT_PARAMS = 'event, context, require, __filename, __dirname';
const MIN_NODE = 18;
// What a script body's top level may hold and a script (or a module) may not.
const SCRIPT_ONLY = /Illegal return statement|await is only valid/;

class LoadError extends Error {}

class Context {
  constructor(metadata, method, path, headers) {
    this.requestId = String(metadata.id || '');
    this.function = String(metadata.function || '');
    this.version = metadata.version === undefined ? null : metadata.version;
    this.deadlineMs = Number(metadata.deadline) || 0;
    this.method = method;
    this.path = path;
    this.headers = headers;
  }

  /** Milliseconds left before faasd ends the container. */
  remainingMs() {
    return Math.max(0, this.deadlineMs - Date.now());
  }
}

function entryPath() {
  const entry = process.env.FAAS_ENTRY || '';
  if (!entry) throw new LoadError('FAAS_ENTRY names no entry file');
  return path.join(CODE_DIR, entry);
}

/** Whether Node loads `file` as an ES module: .mjs, or .js under a package.json saying "type": "module". */
function isModule(file) {
  if (file.endsWith('.mjs')) return true;
  if (!file.endsWith('.js')) return false;
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    let text;
    try {
      text = fs.readFileSync(path.join(dir, 'package.json'), 'utf8');
    } catch {
      if (dir === path.dirname(dir)) return false;
      continue;
    }
    try {
      return JSON.parse(text).type === 'module';
    } catch {
      return false;
    }
  }
}

/** `entry:line:column: SyntaxError: message`, read from the stack V8 decorates with the line and a caret. */
function syntaxMessage(err, entry) {
  const lines = String(err.stack || '').split('\n');
  const at = /:(\d+)$/.exec(lines[0] || '');
  const caret = (lines[2] || '').indexOf('^');
  const where = at ? `${at[1]}:${caret >= 0 ? caret + 1 : 1}` : '?';
  let said = `${entry}:${where}: SyntaxError: ${err.message}`;
  if (/import statement outside a module|Unexpected token 'export'/.test(err.message)) {
    said += ' (an ES module: name it .mjs, or add a package.json with "type": "module")';
  }
  return said;
}

/**
 * The ES module's namespace. V8 tells where an ES module's syntax error is only to a process it
 * ends; `node --check` is that process, asked only when there is an error to place.
 */
async function importModule(file, entry) {
  try {
    return await import(pathToFileURL(file).href);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    const checked = require('child_process').spawnSync(process.execPath, ['--check', file], { encoding: 'utf8' });
    if (!String(checked.stderr).startsWith(`${file}:`)) throw err; // the error is in a module it imports
    throw new LoadError(syntaxMessage({ message: err.message, stack: checked.stderr }, entry));
  }
}

/** A script body as a function of (event, context), async (and a generator if it yields). */
function compileScript(source, file, entry) {
  let first;
  for (const kind of ['async function', 'async function*']) {
    try {
      const script = new vm.Script(`(${kind} (${SCRIPT_PARAMS}) {\n${source}\n})`, { filename: file, lineOffset: -1 });
      const compiled = script.runInThisContext();
      const require = Module.createRequire(file);
      const run = (event, context) => compiled(event, context, require, file, path.dirname(file));
      return { run, generates: kind.endsWith('*') };
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      first = first || err;
    }
  }
  throw new LoadError(syntaxMessage(first, entry));
}

/** The file as a CommonJS module; its handler, or a top-level function of that name it declares. */
function loadCommonJS(source, file, name) {
  const module = new Module(file, null);
  module.filename = file;
  module.paths = Module._nodeModulePaths(path.dirname(file));
  Module._cache[file] = module;
  // Appended after the last line, so every line keeps its number: GraalFaaS's functions are
  // declared, not exported, and only the module's own scope sees them.
  const declared = module._compile(`${source}\n;return typeof ${name} === "function" ? ${name} : undefined;`, file);
  module.loaded = true;
  const exported = module.exports;
  if (typeof exported === 'function') return exported;
  if (exported && typeof exported[name] === 'function') return exported[name];
  if (exported && typeof exported.default === 'function') return exported.default;
  return declared;
}

/** The style ("module" or "script"), the function to call per request, and whether it streams. */
async function load(name) {
  const file = entryPath();
  const entry = path.relative(CODE_DIR, file);
  let source;
  try {
    source = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new LoadError(`cannot read the entry file ${entry}: ${err.code || err.message}`);
  }
  try {
    if (isModule(file)) {
      const namespace = await importModule(file, entry);
      const found = typeof namespace[name] === 'function' ? namespace[name] : namespace.default;
      if (typeof found !== 'function') {
        throw new LoadError(`${entry} exports no function: export default (event, context) => ..., or ${name}`);
      }
      return { style: 'module', run: found, generates: isGenerator(found) };
    }
    try {
      new vm.Script(source, { filename: file }); // eslint-disable-line no-new
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      let compiled; // a top-level return, await or yield: a script body
      try {
        compiled = compileScript(source, file, entry);
      } catch (scriptErr) {
        // A script body's error where the file can only be one, else the error node --check gives.
        throw scriptErr instanceof LoadError && !SCRIPT_ONLY.test(err.message) ? new LoadError(syntaxMessage(err, entry)) : scriptErr;
      }
      return { style: 'script', ...compiled };
    }
    const found = loadCommonJS(source, file, name);
    if (typeof found !== 'function') {
      throw new LoadError(
        `${entry} exports no ${name}(event, context) (module.exports = ..., or export default) and has no ` +
          'top-level return: write one or the other',
      );
    }
    return { style: 'module', run: found, generates: isGenerator(found) };
  } catch (err) {
    if (err instanceof LoadError) throw err;
    if (err instanceof SyntaxError && String(err.stack).startsWith(file)) throw new LoadError(syntaxMessage(err, entry));
    printUserStack(err);
    throw new LoadError(`${entry} failed while loading: ${errorText(err)}`);
  }
}

function isGenerator(fn) {
  const kind = Object.prototype.toString.call(fn);
  return kind === '[object AsyncGeneratorFunction]' || kind === '[object GeneratorFunction]';
}

function errorText(err) {
  return err instanceof Error ? `${err.name}: ${err.message}` : `Error: ${util.inspect(err)}`;
}

/** The stack to the log, less this wrapper's frames and Node's own: the user's code. */
function printUserStack(err) {
  if (!(err instanceof Error) || !err.stack) {
    process.stderr.write(`Uncaught ${util.inspect(err)}\n`);
    return;
  }
  const lines = err.stack.split('\n').filter((line) => !line.includes(__filename) && !line.includes('(node:'));
  process.stderr.write(`${lines.join('\n')}\n`);
}

function parseEvent(method, body, query) {
  if (body.length === 0) {
    return ['GET', 'HEAD', 'DELETE'].includes(method) || Object.keys(query).length ? { ...query } : {};
  }
  const text = body.toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function isPlainObject(value) {
  return value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype;
}

function isBytes(value) {
  return value instanceof Uint8Array || value instanceof ArrayBuffer;
}

/** Status, header pairs, body bytes and implied content type of what the handler returned. */
function responseParts(result) {
  if (isPlainObject(result) && 'statusCode' in result && Object.keys(result).every((key) => SHAPE_KEYS.has(key))) {
    const status = Number(result.statusCode);
    if (!Number.isInteger(status) || status < 100 || status > 999) {
      throw new RangeError(`statusCode ${util.inspect(result.statusCode)} is not an HTTP status`);
    }
    const pairs = Object.entries(result.headers || {}).map(([key, value]) => [String(key), String(value)]);
    let body = result.body;
    if (typeof body === 'string' && result.isBase64Encoded) body = Buffer.from(body, 'base64');
    const empty = body === undefined || body === null || body === '' || (isBytes(body) && body.byteLength === 0);
    const inner = empty ? { data: Buffer.alloc(0), implied: null } : responseParts(body);
    return { status, pairs, data: inner.data, implied: inner.implied };
  }
  if (typeof result === 'string') return { status: 200, pairs: [], data: Buffer.from(result), implied: 'text/plain; charset=utf-8' };
  if (isBytes(result)) return { status: 200, pairs: [], data: Buffer.from(result), implied: 'application/octet-stream' };
  return { status: 200, pairs: [], data: Buffer.from(json(result)), implied: 'application/json' };
}

/** JSON text of a value; undefined is null. A value JSON cannot hold (a BigInt) throws. */
function json(value) {
  const text = JSON.stringify(value);
  return text === undefined ? 'null' : text;
}

/** A run's result as JSON can carry it: bytes as text (base64 when not UTF-8), others as they are. */
function jsonable(result) {
  if (isBytes(result)) {
    const bytes = Buffer.from(result);
    try {
      return new util.TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      return bytes.toString('base64');
    }
  }
  return JSON.parse(json(result));
}

/**
 * The path after the `prefix` the gateway routed the connection by (/function/NAME, in the
 * metadata); a request whose path is not under it keeps its whole path.
 */
function mountedPath(requestPath, metadata) {
  const prefix = metadata.prefix;
  if (typeof prefix === 'string' && prefix && (requestPath === prefix || requestPath.startsWith(`${prefix}/`))) {
    return requestPath.slice(prefix.length) || '/';
  }
  return requestPath;
}

/** Whether the gateway routed the connection by go-faas's /run/PATH: its body is {"input", "stream"}, its answer {"data", "type"}. */
function byGoFaas(metadata) {
  return typeof metadata.prefix === 'string' && metadata.prefix.startsWith('/run/');
}

/** The event and stream flag of go-faas's {"input", "stream"}; input may be JSON text. */
function goFaasEvent(body) {
  if (!isPlainObject(body)) return [body, false];
  let event = body.input;
  if (typeof event === 'string') {
    try {
      event = JSON.parse(event);
    } catch {
      // text stays text
    }
  }
  return [event, body.stream === true];
}

/** One Server-Sent Event: each line of `data` (JSON unless a string) as a data: field. */
function sseEvent(data, name) {
  const text = typeof data === 'string' ? data : json(data);
  const fields = name ? [`event: ${name}`] : [];
  for (const line of text.split(/\r\n|\r|\n/)) fields.push(`data: ${line}`);
  return `${fields.join('\n')}\n\n`;
}

/** Call `process.stdout.write` through `onLine` for each whole line written, until the returned undo. */
function teeLines(onLine) {
  const stdout = process.stdout;
  const write = stdout.write;
  let partial = '';
  stdout.write = function (chunk, ...rest) {
    const lines = (partial + (typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'))).split('\n');
    partial = lines.pop();
    for (const line of lines) onLine(line);
    return write.call(stdout, chunk, ...rest);
  };
  return () => {
    stdout.write = write;
  };
}

/** Write and send at once: http corks the socket until the next tick, code that never yields would hold events back. */
function flushWrite(res, text) {
  res.write(text);
  if (res.socket && res.socket.writableCorked) res.socket.uncork();
}

/**
 * Call `fn` and give `emit` each item it yields and each line it logs meanwhile, the moment it
 * comes; then its outcome, {result} or {error}, its stack in the log.
 */
async function produce(fn, event, context, emit) {
  const untee = teeLines(emit);
  try {
    const result = fn(event, context);
    let value;
    if (result && typeof result.next === 'function' && (Symbol.asyncIterator in result || Symbol.iterator in result)) {
      for (let step = await result.next(); ; step = await result.next()) {
        if (step.done) {
          value = step.value;
          break;
        }
        emit(jsonable(step.value));
      }
    } else {
      value = await result;
    }
    return { result: jsonable(value) };
  } catch (err) {
    printUserStack(err);
    return { error: errorText(err) };
  } finally {
    untee();
  }
}

/** Server-Sent Events of one call: each item and line as a data: event, then `event: result` (or `event: error`). */
async function stream(res, fn, event, context) {
  res.statusCode = 200;
  res.setHeader('Content-Type', 'text/event-stream');
  res.setHeader('Cache-Control', 'no-store');
  const outcome = await produce(fn, event, context, (data) => flushWrite(res, sseEvent(data)));
  if ('result' in outcome) {
    flushWrite(res, sseEvent(outcome.result, 'result'));
  } else {
    flushWrite(res, sseEvent({ error: outcome.error, request_id: context.requestId }, 'error'));
  }
  res.end();
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        req.destroy();
        reject(Object.assign(new Error(`request body over ${MAX_BODY} bytes`), { status: 413 }));
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res, status, pairs, data, implied) {
  res.statusCode = status;
  for (const [key, value] of pairs) {
    const had = res.getHeader(key);
    res.setHeader(key, had === undefined ? value : [].concat(had, value));
  }
  if (implied && data.length && !res.hasHeader('content-type')) res.setHeader('Content-Type', implied);
  res.end(data);
}

function sendError(res, status, error) {
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  send(res, status, [], Buffer.from(json(error)), 'application/json');
}

/** The request handler that runs `fn` for each request. */
function makeHandle(fn, generates) {
  return async (req, res) => {
    const metadata = req.socket.faasMetadata || {};
    res.on('finish', () => {
      const said = `"${req.method} ${req.url} HTTP/${req.httpVersion}" ${res.statusCode}`;
      process.stderr.write(`faas_runtime id=${metadata.id || '-'} ${said}\n`);
    });
    // An origin-form target is a path, even one that starts with "//" (RFC 9112 3.2.1).
    const url = req.url.startsWith('/') ? new URL(`http://function${req.url}`) : new URL(req.url, 'http://function');
    let requestPath = url.pathname;
    try {
      requestPath = decodeURIComponent(requestPath);
    } catch {
      // an invalid escape stays as it came
    }
    const goFaas = byGoFaas(metadata);
    const query = {};
    for (const [key, value] of url.searchParams) if (!(key in query)) query[key] = value;
    const context = new Context(metadata, req.method, mountedPath(requestPath, metadata), { ...req.headers });
    let body;
    try {
      body = await readBody(req);
    } catch (err) {
      sendError(res, err.status || 400, { error: err.message, request_id: context.requestId });
      return;
    }
    try {
      let event = parseEvent(req.method, body, query);
      let wantsStream = String(req.headers.accept || '').includes('text/event-stream');
      if (goFaas) [event, wantsStream] = goFaasEvent(event);
      if (generates || wantsStream) {
        await stream(res, fn, event, context);
        return;
      }
      let result = await fn(event, context);
      if (goFaas) result = { data: jsonable(result), type: typeof result === 'string' ? 'text' : 'json' };
      const { status, pairs, data, implied } = responseParts(result);
      send(res, status, pairs, data, implied);
    } catch (err) {
      printUserStack(err);
      if (res.headersSent) {
        res.destroy();
      } else {
        sendError(res, 500, { error: errorText(err), request_id: context.requestId });
      }
    }
  };
}

/** Serve each connection faasd hands over on the IPC channel: one, or more while its metadata says so. */
function serve(fn, generates) {
  if (typeof process.send !== 'function') {
    process.stderr.write('faas runtime: no IPC channel (NODE_CHANNEL_FD): faasd starts this with FAAS_HANDOFF=node-ipc\n');
    return 1;
  }
  const server = http.createServer(makeHandle(fn, generates));
  let serving = 0; // connections taken and not yet closed
  process.on('message', (metadata, socket) => {
    if (!socket) return; // a message without a connection is none of faasd's
    serving += 1;
    const deadline = Number(metadata.deadline) || 0;
    // Kept alive between requests only while another could be answered before the deadline.
    server.keepAliveTimeout = deadline ? Math.max(1, deadline - Date.now() - DEADLINE_MARGIN_MS) : 5000;
    socket.faasMetadata = metadata;
    socket.setNoDelay(true);
    socket.on('close', () => {
      serving -= 1;
      if (metadata.more === true && process.connected) {
        process.send({ faas: 'ready' });
      } else if (serving === 0) {
        process.exit(0); // the last client is done: nothing the code left running outlives it
      }
    });
    server.emit('connection', socket);
  });
  // faasd closed the channel without a connection: it retires this container (a pool emptied).
  process.on('disconnect', () => {
    if (serving === 0) process.exit(0);
  });
  process.send({ faas: 'ready' });
  return null;
}

/** Load the code as a container would and say on stdout whether it can serve (faasd's deploy check). */
async function check(name) {
  const untee = redirectStdout((text) => process.stderr.write(text)); // what loading prints is not the verdict
  let verdict;
  try {
    const { style } = await load(name);
    verdict = { ok: true, style, node: process.versions.node };
  } catch (err) {
    if (!(err instanceof LoadError)) throw err;
    verdict = { ok: false, error: err.message };
  } finally {
    untee();
  }
  fs.writeSync(1, `${JSON.stringify(verdict)}\n`);
  return verdict.ok ? 0 : 1;
}

/** Send what is written to process.stdout to `sink` instead, until the returned undo. */
function redirectStdout(sink) {
  const stdout = process.stdout;
  const write = stdout.write;
  stdout.write = (chunk, encoding, callback) => {
    sink(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    const done = typeof encoding === 'function' ? encoding : callback;
    if (typeof done === 'function') process.nextTick(done);
    return true;
  };
  return () => {
    stdout.write = write;
  };
}

/**
 * Load the code, call it once with the event in FAAS_IO_DIR/input.json, and write
 * {"result"|"error", "stdout"} as one JSON line on stdout (faasd's run-once). What the code
 * prints is kept meanwhile (its last bytes), and comes back as "stdout". When it `streams`, each
 * item the code yields and line it prints is first written on stdout as
 * {"event": "message", "data": ...}, at once (faasd sends each as an SSE event).
 */
async function runOnce(name, streams) {
  let captured = '';
  const untee = redirectStdout((text) => {
    captured = (captured + text).slice(-MAX_CAPTURED);
  });
  const verdict = {};
  try {
    const input = fs.readFileSync(path.join(IO_DIR, 'input.json'), 'utf8');
    const event = JSON.parse(input || 'null');
    const metadata = { id: process.env.FAAS_REQUEST_ID || '', function: '', version: null };
    metadata.deadline = Number(process.env.FAAS_DEADLINE_MS || 0);
    const { run } = await load(name);
    const context = new Context(metadata, 'RUN', '/', {});
    if (streams) {
      const emit = (data) => fs.writeSync(1, `${JSON.stringify({ event: 'message', data })}\n`);
      Object.assign(verdict, await produce(run, event, context, emit));
    } else {
      verdict.result = jsonable(await run(event, context));
    }
  } catch (err) {
    if (!(err instanceof LoadError)) printUserStack(err);
    verdict.error = err instanceof LoadError ? err.message : errorText(err);
  } finally {
    untee();
  }
  verdict.stdout = captured;
  fs.writeSync(1, `${JSON.stringify(verdict)}\n`);
  return 'error' in verdict ? 1 : 0;
}

/** Say whether this node can run the wrapper (faasd runs it when the runtime is added): V8 keeps no bytecode to compile. */
function probe() {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < MIN_NODE) {
    process.stderr.write(`node ${process.versions.node} is too old: faasd's wrapper needs node ${MIN_NODE} or newer\n`);
    return 1;
  }
  fs.writeSync(1, `${JSON.stringify({ ok: true, node: process.versions.node })}\n`);
  return 0;
}

async function main(argv) {
  const name = process.env.FAAS_HANDLER || 'handler';
  if (argv.length === 1 && argv[0] === '--check') return check(name);
  if (argv[0] === '--once' && (argv.length === 1 || (argv.length === 2 && argv[1] === '--stream'))) {
    return runOnce(name, argv.length === 2);
  }
  if (argv.length === 2 && argv[0] === '--compile') return probe();
  let loaded;
  try {
    loaded = await load(name);
  } catch (err) {
    if (!(err instanceof LoadError)) throw err;
    process.stderr.write(`faas runtime: ${err.message}\n`);
    return 1;
  }
  return serve(loaded.run, loaded.generates);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== null) process.exit(code);
  },
  (err) => {
    printUserStack(err);
    process.exit(1);
  },
);
