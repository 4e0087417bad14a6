"use strict";
/*
 * faasd's deploy-time build of a Node function: package.json's dependencies installed by npm,
 * and TypeScript compiled by tsc. Node's standard library only.
 *
 * faasd runs this once per deploy, in a one-shot container of the function's runtime: the code
 * is bound read-only at /faas/code, the operator's directory of package tarballs (npm pack's
 * .tgz files) read-only at /faas/packages, and /faas/deps is a size-limited tmpfs to work in.
 * There is no network: npm is pointed at a registry this script serves on the container's own
 * loopback, whose packages are the tarballs of that directory and nothing else, so npm resolves
 * versions, ranges and lockfiles as it always does. TypeScript is compiled by the compiler of
 * the runtime's tsc (Debian's node-typescript), in this process. What npm says and the
 * compiler's errors (as file:line:col) go to stderr, whose last lines answer a deploy that fails. On success
 * the files the build made (node_modules, the compiled .js) are written to stdout as a tar of
 * members under code/; faasd lays them into the function's code layer beside its files.
 *
 *     node build.js     build /faas/code, then write the tar to stdout
 */

const crypto = require("crypto");
const fs = require("fs");
const http = require("http");
const path = require("path");
const zlib = require("zlib");
const { spawn } = require("child_process");

const CODE_DIR = process.env.FAAS_CODE_DIR || "/faas/code";
const DEPS_DIR = process.env.FAAS_DEPS_DIR || "/faas/deps";
const PACKAGES_DIR = process.env.FAAS_PACKAGES_DIR || "/faas/packages";
const WORK = path.join(DEPS_DIR, "code");
const REGISTRY_PORT = Number(process.env.FAAS_REGISTRY_PORT || 4873); // the container's own loopback

function say(text) {
  fs.writeSync(2, text.endsWith("\n") ? text : text + "\n");
}

/* Every path under `root`, relative, sorted (a parent before its children), not following links. */
function walk(root) {
  const found = [];
  const visit = (relative) => {
    for (const name of fs.readdirSync(path.join(root, relative))) {
      const child = relative ? relative + "/" + name : name;
      found.push(child);
      if (fs.lstatSync(path.join(root, child)).isDirectory()) visit(child);
    }
  };
  visit("");
  return found.sort();
}

function copyCode() {
  fs.mkdirSync(WORK, { recursive: true });
  for (const relative of walk(CODE_DIR)) {
    const from = path.join(CODE_DIR, relative);
    const to = path.join(WORK, relative);
    const stat = fs.lstatSync(from);
    if (stat.isDirectory()) fs.mkdirSync(to, { recursive: true });
    else if (stat.isFile()) fs.copyFileSync(from, to);
  }
}

/* The package.json inside an npm tarball (its first directory, "package/" as npm packs it). */
function manifestOf(tgz) {
  const tar = zlib.gunzipSync(tgz);
  for (let at = 0; at + 512 <= tar.length; ) {
    const header = tar.subarray(at, at + 512);
    const name = header.subarray(0, 100).toString("utf8").replace(/\0.*$/s, "");
    if (!name) break;
    const size = parseInt(header.subarray(124, 136).toString("ascii").replace(/\0.*$/s, "").trim() || "0", 8);
    if (/^[^/]+\/package\.json$/.test(name)) return JSON.parse(tar.subarray(at + 512, at + 512 + size).toString("utf8"));
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return null;
}

function newer(a, b) {
  const parts = (v) => v.split(/[.+-]/).map((p) => (/^\d+$/.test(p) ? Number(p) : -1));
  const [x, y] = [parts(a), parts(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if ((x[i] ?? -2) !== (y[i] ?? -2)) return (x[i] ?? -2) > (y[i] ?? -2);
  }
  return false;
}

/*
 * The registry documents (packuments) of the package directory's tarballs, and the tarballs by
 * name@version, at the URLs the npm registry gives them (a lockfile's, with its host replaced).
 */
function readPackages(base) {
  const documents = new Map();
  const tarballs = new Map();
  let names = [];
  try {
    names = fs.readdirSync(PACKAGES_DIR).filter((name) => name.endsWith(".tgz")).sort();
  } catch (error) {
    say(`faas build: no package directory (${error.code}): its operator sets one with faasd --packages DIR`);
  }
  for (const file of names) {
    const tgz = fs.readFileSync(path.join(PACKAGES_DIR, file));
    let manifest;
    try {
      manifest = manifestOf(tgz);
    } catch (error) {
      say(`faas build: ${file} is no npm tarball, left out: ${error.message}`);
      continue;
    }
    if (!manifest || typeof manifest.name !== "string" || typeof manifest.version !== "string") continue;
    const { name, version } = manifest;
    const integrity = "sha512-" + crypto.createHash("sha512").update(tgz).digest("base64");
    const document = documents.get(name) || { name, versions: {}, "dist-tags": {} };
    const dist = { tarball: `${base}/${name}/-/${name.split("/").pop()}-${version}.tgz`, integrity };
    document.versions[version] = { ...manifest, _id: `${name}@${version}`, dist };
    const latest = document["dist-tags"].latest;
    if (!latest || newer(version, latest)) document["dist-tags"].latest = version;
    documents.set(name, document);
    tarballs.set(`${name}@${version}`, tgz);
  }
  return { documents, tarballs };
}

/* What the registry has at `pathname`: a tarball (/NAME/-/BASENAME-VERSION.tgz), a document (/NAME), or undefined. */
function lookUp(pathname, documents, tarballs) {
  const tarball = /^\/(.+)\/-\/([^/]+)\.tgz$/.exec(pathname);
  if (!tarball) return documents.get(pathname.slice(1));
  const [, name, file] = tarball;
  const prefix = name.split("/").pop() + "-";
  return file.startsWith(prefix) ? tarballs.get(`${name}@${file.slice(prefix.length)}`) : undefined;
}

function serveRegistry() {
  const base = `http://127.0.0.1:${REGISTRY_PORT}`;
  const { documents, tarballs } = readPackages(base);
  const server = http.createServer((request, response) => {
    const found = lookUp(decodeURIComponent(new URL(request.url, base).pathname), documents, tarballs);
    if (found === undefined) {
      response.writeHead(404, { "content-type": "application/json" }).end('{"error":"not found"}');
    } else if (Buffer.isBuffer(found)) {
      response.writeHead(200, { "content-type": "application/octet-stream" }).end(found);
    } else {
      response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(found));
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(REGISTRY_PORT, "127.0.0.1", () => resolve({ server, base }));
  });
}

/* Run a command in WORK, its stdout and stderr to our stderr; its exit status. */
function run(command, args) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: WORK, stdio: ["ignore", "pipe", "pipe"] });
    for (const stream of [child.stdout, child.stderr]) {
      let partial = "";
      stream.on("data", (chunk) => {
        const lines = (partial + chunk).split("\n");
        partial = lines.pop();
        for (const line of lines) say(line);
      });
      stream.on("end", () => partial && say(partial));
    }
    child.on("error", (error) => {
      say(`faas build: cannot run ${command}: ${error.message}`);
      resolve(127);
    });
    child.on("close", (status) => resolve(status === null ? 1 : status));
  });
}

/* npm install from the registry served here; the lockfiles it writes are left out of the build. */
async function install(sources) {
  const { server, base } = await serveRegistry();
  try {
    return await run("npm", [
      "install", `--registry=${base}/`, "--cache=/tmp/npm-cache", "--no-audit", "--no-fund",
      "--no-update-notifier", "--ignore-scripts", "--no-bin-links", "--omit=dev",
    ]);
  } finally {
    server.close();
    fs.rmSync(path.join(WORK, "node_modules", ".package-lock.json"), { force: true });
    if (!sources.includes("package-lock.json")) fs.rmSync(path.join(WORK, "package-lock.json"), { force: true });
  }
}

/* The TypeScript compiler of the tsc on PATH (Debian's node-typescript: /usr/bin/tsc). */
function typescript() {
  for (const dir of (process.env.PATH || "").split(":")) {
    const bin = path.join(dir, "tsc");
    if (fs.existsSync(bin)) return require(path.join(path.dirname(fs.realpathSync(bin)), ".."));
  }
  throw new Error("the runtime has no tsc on its PATH: Debian's node-typescript has one");
}

/* Whether the file's top level has a return outside any function: a script body (go-faas's style). */
function isScript(ts, source) {
  const visit = (node) => {
    if (ts.isReturnStatement(node)) return true;
    if (ts.isFunctionLike(node) || ts.isClassLike(node)) return false;
    return ts.forEachChild(node, visit) || false;
  };
  return ts.forEachChild(source, visit) || false;
}

/*
 * Compile the .ts files in WORK beside themselves, as CommonJS; say each error as
 * file:line:col and emit nothing if there is one. A script body is compiled as the body of an
 * exported function of (event, context), on lines of its own so its line numbers stay.
 */
function compile(files) {
  const ts = typescript();
  const typeRoots = [path.join(WORK, "node_modules", "@types"), "/usr/share/nodejs/@types"];
  const options = {
    target: ts.ScriptTarget.ES2020,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.NodeJs,
    esModuleInterop: true,
    skipLibCheck: true,
    noEmitOnError: true,
    // Node's own types, not every package Debian has types for (that would double the time).
    typeRoots,
    types: typeRoots.some((root) => fs.existsSync(path.join(root, "node"))) ? ["node"] : [],
  };
  const host = ts.createCompilerHost(options);
  const read = host.getSourceFile.bind(host);
  const wrapped = new Set();
  host.getSourceFile = (name, version, onError, create) => {
    const source = read(name, version, onError, create);
    if (!source || !name.startsWith(WORK + "/") || !isScript(ts, source)) return source;
    wrapped.add(source.fileName);
    const text = `export default async function (event: any, context: any) {\n${source.text}\n}\n`;
    return ts.createSourceFile(name, text, version);
  };
  const program = ts.createProgram(files.map((name) => path.join(WORK, name)), options, host);
  const failed = (found) => found.some((d) => d.category === ts.DiagnosticCategory.Error);
  const diagnostics = [...ts.getPreEmitDiagnostics(program)];
  const emitted = failed(diagnostics) ? { emitSkipped: true, diagnostics: [] } : program.emit();
  diagnostics.push(...emitted.diagnostics);
  for (const diagnostic of diagnostics) {
    const text = ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n");
    const kind = ts.DiagnosticCategory[diagnostic.category].toLowerCase();
    if (!diagnostic.file) {
      say(`${kind} TS${diagnostic.code}: ${text}`);
      continue;
    }
    const at = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start || 0);
    const line = at.line + (wrapped.has(diagnostic.file.fileName) ? 0 : 1);
    const name = path.relative(WORK, diagnostic.file.fileName);
    say(`${name}:${line}:${at.character + 1}: ${kind} TS${diagnostic.code}: ${text}`);
  }
  return emitted.emitSkipped || failed(diagnostics) ? 1 : 0;
}

/* A ustar header, after a PAX header carrying the name or link when either is too long for it. */
function headers(name, type, size, mode, link) {
  const blocks = [];
  if (Buffer.byteLength(name) > 100 || Buffer.byteLength(link) > 100) {
    let body = "";
    for (const [key, value] of [["path", name], ["linkpath", link]]) {
      if (!value) continue;
      const record = ` ${key}=${value}\n`;
      let length = Buffer.byteLength(record) + 1;
      while (String(length).length + Buffer.byteLength(record) !== length) length++;
      body += length + record;
    }
    const data = Buffer.from(body);
    blocks.push(header("PaxHeader", "x", data.length, 0o644, ""), data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(header(name, type, size, mode, link));
  return blocks;
}

function header(name, type, size, mode, link) {
  const block = Buffer.alloc(512);
  const put = (text, at, length) => block.write(text, at, Math.min(Buffer.byteLength(text), length), "utf8");
  const octal = (value, at, length) => put(value.toString(8).padStart(length - 1, "0") + "\0", at, length);
  put(name.slice(0, 100), 0, 100);
  octal(mode, 100, 8);
  octal(0, 108, 8);
  octal(0, 116, 8);
  octal(size, 124, 12);
  octal(1700000000, 136, 12);
  block.fill(" ", 148, 156);
  put(type, 156, 1);
  put(link.slice(0, 100), 157, 100);
  put("ustar\0" + "00", 257, 8);
  let sum = 0;
  for (const byte of block) sum += byte;
  put(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8);
  return block;
}

function write(buffer) {
  for (let at = 0; at < buffer.length; ) at += fs.writeSync(1, buffer, at);
}

/* The files the build made (not the code's own) and every directory, as a tar on stdout. */
function writeTar(sources) {
  const made = walk(WORK).filter((relative) => !sources.has(relative));
  headers("code", "5", 0, 0o755, "").forEach(write);
  for (const relative of made) {
    const full = path.join(WORK, relative);
    const stat = fs.lstatSync(full);
    const name = "code/" + relative;
    if (stat.isDirectory()) {
      headers(name, "5", 0, 0o755, "").forEach(write);
    } else if (stat.isSymbolicLink()) {
      headers(name, "2", 0, 0o777, fs.readlinkSync(full)).forEach(write);
    } else if (stat.isFile()) {
      const data = fs.readFileSync(full);
      headers(name, "0", data.length, stat.mode & 0o111 ? 0o755 : 0o644, "").forEach(write);
      write(data);
      write(Buffer.alloc((512 - (data.length % 512)) % 512));
    }
  }
  write(Buffer.alloc(1024));
}

async function main() {
  const sources = walk(CODE_DIR).filter((relative) => !fs.lstatSync(path.join(CODE_DIR, relative)).isDirectory());
  copyCode();
  if (sources.includes("package.json")) {
    const status = await install(sources);
    if (status !== 0) {
      say(`faas build: npm exited with status ${status}`);
      return 1;
    }
  }
  const typescriptFiles = sources.filter((relative) => relative.endsWith(".ts") && !relative.endsWith(".d.ts"));
  if (typescriptFiles.length && compile(typescriptFiles) !== 0) {
    say("faas build: TypeScript did not compile");
    return 1;
  }
  writeTar(new Set(sources));
  return 0;
}

main().then(
  (status) => process.exit(status),
  (error) => {
    say(`faas build: ${error.stack || error}`);
    process.exit(1);
  },
);
