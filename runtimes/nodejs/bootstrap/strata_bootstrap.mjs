// Strata's bootstrap for Node.js functions.
//
// Runs inside every instance of Strata's built-in `nodejs` runtime. It talks to the instance
// agent over the Lambda-compatible Runtime API (2018-06-01) found at $AWS_LAMBDA_RUNTIME_API,
// loads the user's handler once, then loops: long-poll the next invocation, call
// `handler(event, context[, callback])`, post the JSON result or the error.
//
// Started as `node strata_bootstrap.mjs HANDLER`; the handler (`index.handler`,
// `src/app.handler`, `index.nested.fn`) is the last argument, else $_HANDLER. The code lives in
// $LAMBDA_TASK_ROOT (default: the working directory). `FILE` resolves to FILE.js, FILE.mjs or
// FILE.cjs, in that order; .mjs (and .js under a package.json with "type": "module") load as ES
// modules, the rest through require().
//
// Deferred start (generic instances kept warm before any function needs them): with
// STRATA_SPECIALIZE=1 in the environment, it loads everything it needs, then asks the agent
// `GET /2018-06-01/strata/specialization`, which answers once the instance is given a function:
// {"function": ..., "handler": ..., "env": {...}}. The environment is applied to process.env, the
// working directory becomes $LAMBDA_TASK_ROOT (default /var/task), the handler is resolved from
// there, and it goes on exactly as a direct start with that handler.
//
// Uses only Node.js 18 built-ins; no dependencies.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';

const API = '/2018-06-01/runtime';
const SPECIALIZATION = '/2018-06-01/strata/specialization';
const DEFAULT_TASK_ROOT = '/var/task';
const ERROR_CONTENT_TYPE = 'application/vnd.aws.lambda.error+json';

class Fault extends Error {
  constructor(errorType, message, cause) {
    super(message);
    this.errorType = errorType;
    this.cause = cause;
  }
}

// ------------------------------------------------------------------------------------------
// Runtime API client: one keep-alive connection, no timeout (/next blocks until there is work).

const address = process.env.AWS_LAMBDA_RUNTIME_API || '';
const colon = address.lastIndexOf(':');
const apiHost = (colon > 0 ? address.slice(0, colon) : address).replace(/^\[(.*)\]$/, '$1');
const apiPort = colon > 0 ? Number(address.slice(colon + 1)) : 80;
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function request(method, urlPath, body, headers, retried) {
  return new Promise((resolve, reject) => {
    const hdrs = { ...(headers || {}) };
    if (body !== undefined) hdrs['Content-Length'] = body.length;
    const req = http.request(
      { host: apiHost, port: apiPort, path: urlPath, method, agent, headers: hdrs },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () =>
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }),
        );
      },
    );
    req.on('error', (err) => {
      // The agent closed an idle keep-alive connection: reconnect once.
      if (!retried && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
        request(method, urlPath, body, headers, true).then(resolve, reject);
      } else {
        reject(err);
      }
    });
    req.end(body);
  });
}

async function post(urlPath, body, headers) {
  const res = await request('POST', urlPath, Buffer.from(body, 'utf8'), headers);
  if (res.status >= 300) {
    logError(`POST ${urlPath} returned ${res.status}: ${res.body.toString('utf8')}`);
  }
}

function postError(urlPath, error, headerType) {
  return post(urlPath, JSON.stringify(error), {
    'Content-Type': ERROR_CONTENT_TYPE,
    'Lambda-Runtime-Function-Error-Type': headerType,
  });
}

// ------------------------------------------------------------------------------------------
// Errors

function logError(message) {
  process.stderr.write(`[ERROR] ${message}\n`);
}

// The error document: `trace` as AWS's Node.js client sends it, `stackTrace` as the others do.
function errorOf(value) {
  try {
    if (value instanceof Error || (value && typeof value === 'object' && 'message' in value && 'stack' in value)) {
      const trace = typeof value.stack === 'string' ? value.stack.split('\n') : [];
      return {
        errorType: value.name || 'Error',
        errorMessage: String(value.message ?? ''),
        trace,
        stackTrace: trace,
      };
    }
    return { errorType: typeof value, errorMessage: String(value), trace: [], stackTrace: [] };
  } catch {
    return {
      errorType: 'handled',
      errorMessage: 'the error could not be read (its message, name or stack threw)',
      trace: [],
      stackTrace: [],
    };
  }
}

function faultError(fault) {
  const trace = fault.cause && typeof fault.cause.stack === 'string' ? fault.cause.stack.split('\n') : [];
  return { errorType: fault.errorType, errorMessage: fault.message, trace, stackTrace: trace };
}

function logInvokeError(error) {
  logError(`${error.errorType}: ${error.errorMessage}${error.trace.length ? '\n' + error.trace.join('\n') : ''}`);
}

// ------------------------------------------------------------------------------------------
// Loading the handler

function packageType(dir) {
  for (;;) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file)) {
      try {
        return JSON.parse(fs.readFileSync(file, 'utf8')).type || 'commonjs';
      } catch {
        return 'commonjs';
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return 'commonjs';
    dir = parent;
  }
}

function isFile(p) {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

async function loadModule(file) {
  const asEsm = () => import(pathToFileURL(file).href);
  if (file.endsWith('.mjs')) return asEsm();
  if (file.endsWith('.js') && packageType(path.dirname(file)) === 'module') return asEsm();
  if (file.endsWith('.cjs') || file.endsWith('.js')) {
    try {
      return createRequire(file)(file);
    } catch (err) {
      if (err && (err.code === 'ERR_REQUIRE_ESM' || err.code === 'ERR_REQUIRE_ASYNC_MODULE')) return asEsm();
      throw err;
    }
  }
  return asEsm();
}

async function loadHandler(taskRoot, spec) {
  const slash = spec.lastIndexOf('/');
  const dir = spec.slice(0, slash + 1);
  const rest = spec.slice(slash + 1);
  const dot = rest.indexOf('.');
  if (dot <= 0 || dot === rest.length - 1) {
    throw new Fault('Runtime.MalformedHandlerName', `Bad handler ${spec}: expected file.export`);
  }
  const moduleName = rest.slice(0, dot);
  const handlerPath = rest.slice(dot + 1).split('.');
  const base = path.resolve(taskRoot, dir, moduleName);

  let file = ['.js', '.mjs', '.cjs'].map((ext) => base + ext).find(isFile);
  if (!file) {
    try {
      file = createRequire(path.join(taskRoot, 'noop.js')).resolve(base); // a directory's index
    } catch {
      throw new Fault('Runtime.ImportModuleError', `Error: Cannot find module '${dir}${moduleName}'`);
    }
  }

  let mod;
  try {
    mod = await loadModule(file);
  } catch (err) {
    if (err instanceof SyntaxError) {
      throw new Fault('Runtime.UserCodeSyntaxError', `${err.name}: ${err.message}`, err);
    }
    if (err && (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_MODULE_NOT_FOUND')) {
      throw new Fault('Runtime.ImportModuleError', `Error: ${err.message}`, err);
    }
    throw err;
  }

  const lookup = (root) => handlerPath.reduce((obj, key) => (obj == null ? undefined : obj[key]), root);
  let fn = lookup(mod);
  if (typeof fn !== 'function' && mod != null && mod.default != null) fn = lookup(mod.default);
  if (typeof fn !== 'function') {
    throw new Fault('Runtime.HandlerNotFound', `${dir}${rest} is undefined or not exported`);
  }
  return fn;
}

// ------------------------------------------------------------------------------------------
// Invocations

let phase = 'init'; // 'init' | 'idle' | 'invoke'
let current = null; // the running invocation: { settle(outcome), fatal }

function jsonHeader(headers, name) {
  const raw = headers[name];
  if (!raw) return undefined;
  try {
    return JSON.parse(raw);
  } catch {
    return undefined;
  }
}

function makeContext(headers, settle) {
  const env = process.env;
  let deadline = Number(headers['lambda-runtime-deadline-ms']);
  if (!Number.isFinite(deadline)) deadline = Date.now() + 900000;
  const context = {
    callbackWaitsForEmptyEventLoop: true,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    identity: jsonHeader(headers, 'lambda-runtime-cognito-identity'),
    clientContext: jsonHeader(headers, 'lambda-runtime-client-context'),
    tenantId: headers['lambda-runtime-aws-tenant-id'],
    getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
  };
  // The pre-async-era completion methods, kept for compatibility.
  Object.defineProperties(context, {
    done: { value: (err, result) => settle(err == null ? { ok: true, value: result } : { ok: false, error: err }) },
    succeed: { value: (result) => settle({ ok: true, value: result }) },
    fail: { value: (err) => settle({ ok: false, error: err }) },
  });
  return context;
}

function runHandler(handler, event, headers) {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (outcome) => {
      if (settled) return;
      settled = true;
      resolve(outcome);
    };
    current = { settle, fatal: false };
    const context = makeContext(headers, settle);
    const callback = (err, value) =>
      settle(err == null ? { ok: true, value } : { ok: false, error: err });
    let ret;
    try {
      ret = handler(event, context, callback);
    } catch (err) {
      settle({ ok: false, error: err });
      return;
    }
    if (ret != null && typeof ret.then === 'function') {
      ret.then(
        (value) => settle({ ok: true, value }),
        (err) => settle({ ok: false, error: err }),
      );
    } else if (handler.length < 3 && ret !== undefined) {
      settle({ ok: true, value: ret });
    }
    // Otherwise wait for callback / context.done|succeed|fail, or for the event loop to empty
    // (see 'beforeExit' below), which ends the invocation with null as AWS does.
  });
}

async function invoke(handler, headers, body) {
  const requestId = headers['lambda-runtime-aws-request-id'];
  if (!requestId) {
    logError('invocation without Lambda-Runtime-Aws-Request-Id; skipped');
    return;
  }
  const base = `${API}/invocation/${requestId}`;
  const trace = headers['lambda-runtime-trace-id'];
  if (trace) process.env._X_AMZN_TRACE_ID = trace;
  else delete process.env._X_AMZN_TRACE_ID;

  let event;
  try {
    const text = body.toString('utf8');
    event = text.trim() === '' ? null : JSON.parse(text);
  } catch (err) {
    const error = faultError(new Fault('Runtime.UnmarshalError', `Unable to unmarshal input: ${err.message}`, err));
    logInvokeError(error);
    await postError(`${base}/error`, error, error.errorType);
    return;
  }

  phase = 'invoke';
  const outcome = await runHandler(handler, event, headers);
  const fatal = current.fatal;
  try {
    if (outcome.ok) {
      let payload;
      try {
        payload = JSON.stringify(outcome.value === undefined ? null : outcome.value);
      } catch (err) {
        const error = faultError(new Fault('Runtime.MarshalError', `Unable to stringify response body: ${err.message}`, err));
        logInvokeError(error);
        await postError(`${base}/error`, error, error.errorType);
        return;
      }
      await post(`${base}/response`, payload === undefined ? 'null' : payload, {
        'Content-Type': 'application/json',
      });
    } else {
      const error = outcome.errorDoc || errorOf(outcome.error);
      logInvokeError(error);
      await postError(`${base}/error`, error, outcome.headerType || 'Unhandled');
    }
  } finally {
    if (fatal || current.fatal) process.exit(1);
    current = null;
    phase = 'idle';
  }
}

// A crash inside user code: report it as the running invocation's error (or as the init error)
// and exit; the platform starts a fresh instance.
function onFatal(errorDoc, headerType) {
  if (current) {
    current.fatal = true;
    current.settle({ ok: false, errorDoc, headerType });
    return;
  }
  logInvokeError(errorDoc);
  if (phase === 'init') {
    postError(`${API}/init/error`, errorDoc, errorDoc.errorType).finally(() => process.exit(1));
  } else {
    process.exit(1);
  }
}

process.on('uncaughtException', (err) => onFatal(errorOf(err), 'Unhandled'));
process.on('unhandledRejection', (reason) => {
  const doc = errorOf(reason);
  const errorType = 'Runtime.UnhandledPromiseRejection';
  onFatal({ ...doc, errorType, errorMessage: `${doc.errorType}: ${doc.errorMessage}` }, errorType);
});
// Nothing left to run while an invocation is pending: it never completes, so it returns null.
process.on('beforeExit', () => {
  if (current) current.settle({ ok: true, value: null });
});

// Deferred start: wait for the function, apply its environment, move to its code. Returns the
// handler spec.
async function specialize() {
  const res = await request('GET', SPECIALIZATION);
  let answer;
  try {
    answer = res.status === 200 ? JSON.parse(res.body.toString('utf8')) : undefined;
  } catch {
    answer = undefined;
  }
  if (answer === null || typeof answer !== 'object') {
    logError(`GET ${SPECIALIZATION} returned ${res.status}: ${res.body.toString('utf8')}`);
    process.exit(1);
  }
  for (const [key, value] of Object.entries(answer.env || {})) process.env[key] = String(value);
  delete process.env.STRATA_SPECIALIZE;
  const taskRoot = process.env.LAMBDA_TASK_ROOT || DEFAULT_TASK_ROOT;
  try {
    process.chdir(taskRoot);
  } catch (err) {
    logError(`cannot enter the task root ${taskRoot}: ${err.message}`);
  }
  return answer.handler || process.env._HANDLER || '';
}

async function main() {
  if (!address) {
    logError('AWS_LAMBDA_RUNTIME_API is not set');
    process.exit(1);
  }
  let spec;
  let taskRoot;
  if (process.env.STRATA_SPECIALIZE === '1') {
    spec = await specialize();
    taskRoot = process.env.LAMBDA_TASK_ROOT || DEFAULT_TASK_ROOT;
  } else {
    spec = process.argv.length > 2 ? process.argv[process.argv.length - 1] : process.env._HANDLER || '';
    taskRoot = process.env.LAMBDA_TASK_ROOT || process.cwd();
  }

  let handler;
  try {
    handler = await loadHandler(taskRoot, spec);
  } catch (err) {
    const error = err instanceof Fault ? faultError(err) : errorOf(err);
    logInvokeError(error);
    await postError(`${API}/init/error`, error, error.errorType);
    process.exit(1);
  }
  phase = 'idle';

  for (;;) {
    const res = await request('GET', `${API}/invocation/next`);
    if (res.status !== 200) {
      logError(`GET /runtime/invocation/next returned ${res.status}: ${res.body.toString('utf8')}`);
      process.exit(1);
    }
    await invoke(handler, res.headers, res.body);
  }
}

main().catch((err) => {
  logError(`lost the Runtime API at ${address}: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
