"""Strata's bootstrap for Python functions.

Runs inside every instance of Strata's built-in `python3` runtime. It talks to the instance
agent over the Lambda-compatible Runtime API (2018-06-01) found at `$AWS_LAMBDA_RUNTIME_API`,
loads the user's handler once, then loops: long-poll the next invocation, call
`handler(event, context)`, post the JSON result or the error.

Started as `python3 -u strata_bootstrap.py HANDLER`; the handler (`module.func`,
`pkg.mod.func` or `dir/mod.func`) is the last argument, else `$_HANDLER`. The code lives in
`$LAMBDA_TASK_ROOT` (default: the working directory), which goes first on `sys.path`.

Deferred start (generic instances kept warm before any function needs them): with
`STRATA_SPECIALIZE=1` in the environment, it imports everything it needs, then asks the agent
`GET /2018-06-01/strata/specialization`, which answers once the instance is given a function:
`{"function": …, "handler": …, "env": {…}}`. The environment is applied, the working directory
becomes `$LAMBDA_TASK_ROOT` (default /var/task), and it goes on exactly as a direct start with
that handler.

Standard library only, and only the modules it needs, so that start-up stays short.
"""

import http.client
import importlib
import json
import os
import sys
import time

API = "/2018-06-01/runtime"
SPECIALIZATION = "/2018-06-01/strata/specialization"
DEFAULT_TASK_ROOT = "/var/task"
ERROR_CONTENT_TYPE = "application/vnd.aws.lambda.error+json"
_THIS_FILE = os.path.abspath(__file__)


class Fault(Exception):
    """An error of the runtime itself (as opposed to one raised by user code)."""

    def __init__(self, error_type, message, stack_trace=None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack_trace = stack_trace or []


# --------------------------------------------------------------------------------------------
# Runtime API client


class RuntimeClient:
    """A persistent HTTP/1.1 connection to the instance agent. No timeout: /next blocks."""

    def __init__(self, address):
        self.address = address
        self.conn = http.client.HTTPConnection(address)

    def _request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                return resp.status, resp.headers, resp.read()
            except (ConnectionError, http.client.HTTPException):
                # The agent closed an idle keep-alive connection: reconnect once.
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def specialization(self):
        """Blocks until the instance is specialized; returns the decoded answer."""
        status, _, body = self._request("GET", SPECIALIZATION)
        if status != 200:
            raise Fault(
                "Runtime.ApiError",
                "GET %s returned %d: %s" % (SPECIALIZATION, status, body.decode("utf-8", "replace")),
            )
        try:
            spec = json.loads(body)
        except ValueError:
            spec = None
        if not isinstance(spec, dict):
            raise Fault("Runtime.ApiError", "GET %s returned %r" % (SPECIALIZATION, spec))
        return spec

    def next(self):
        status, headers, body = self._request("GET", API + "/invocation/next")
        if status != 200:
            raise Fault(
                "Runtime.ApiError",
                "GET /runtime/invocation/next returned %d: %s"
                % (status, body.decode("utf-8", "replace")),
            )
        return headers, body

    def post_response(self, request_id, payload):
        self._post(
            "%s/invocation/%s/response" % (API, request_id),
            payload,
            {"Content-Type": "application/json"},
        )

    def post_error(self, request_id, error, header_type):
        self._post_error("%s/invocation/%s/error" % (API, request_id), error, header_type)

    def post_init_error(self, error):
        self._post_error(API + "/init/error", error, error["errorType"])

    def _post_error(self, path, error, header_type):
        body = json.dumps(error).encode()
        self._post(
            path,
            body,
            {
                "Content-Type": ERROR_CONTENT_TYPE,
                "Lambda-Runtime-Function-Error-Type": header_type,
            },
        )

    def _post(self, path, body, headers):
        status, _, reply = self._request("POST", path, body, headers)
        if status >= 300:
            log("[ERROR] POST %s returned %d: %s" % (path, status, reply.decode("utf-8", "replace")))


# --------------------------------------------------------------------------------------------
# The context object handed to the handler (same attributes as AWS Lambda's)


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __repr__(self):
        return "CognitoIdentity(%r, %r)" % (self.cognito_identity_id, self.cognito_identity_pool_id)


class Client:
    __slots__ = (
        "installation_id",
        "app_title",
        "app_version_name",
        "app_version_code",
        "app_package_name",
    )


class ClientContext:
    __slots__ = ("client", "custom", "env")


def _obj_from_dict(cls, data):
    obj = cls()
    for field in cls.__slots__:
        setattr(obj, field, data.get(field))
    return obj


def _json_header(headers, name):
    raw = headers.get(name)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class LambdaContext:
    def __init__(self, request_id, deadline_ms, invoked_function_arn, identity, client_context,
                 tenant_id=None):
        env = os.environ
        self.aws_request_id = request_id
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        try:
            self.memory_limit_in_mb = int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", ""))
        except ValueError:
            self.memory_limit_in_mb = None
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.tenant_id = tenant_id
        self.identity = None
        if identity is not None:
            self.identity = CognitoIdentity()
            self.identity.cognito_identity_id = identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = identity.get("cognitoIdentityPoolId")
        self.client_context = None
        if client_context is not None:
            self.client_context = _obj_from_dict(ClientContext, client_context)
            if isinstance(self.client_context.client, dict):
                self.client_context.client = _obj_from_dict(Client, self.client_context.client)
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def log(self, msg):
        sys.stdout.write(str(msg))
        sys.stdout.flush()

    def __repr__(self):
        return (
            "LambdaContext(aws_request_id=%r, function_name=%r, function_version=%r, "
            "invoked_function_arn=%r, memory_limit_in_mb=%r)"
            % (self.aws_request_id, self.function_name, self.function_version,
               self.invoked_function_arn, self.memory_limit_in_mb)
        )


# --------------------------------------------------------------------------------------------
# Errors


def log(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _stack_trace(tb):
    """Formatted frames of a traceback, without the bootstrap's and the import machinery's."""
    import traceback  # only when something failed: it pulls in linecache and tokenize

    frames = [
        f for f in traceback.extract_tb(tb)
        if f.filename != _THIS_FILE and not f.filename.startswith("<frozen importlib")
    ]
    return traceback.format_list(frames)


def _error_of_exception(exc):
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": _stack_trace(exc.__traceback__),
    }


def _error_of_fault(fault):
    return {
        "errorMessage": fault.message,
        "errorType": fault.error_type,
        "stackTrace": fault.stack_trace,
    }


def _log_error(error):
    trace = "".join(error["stackTrace"])
    if trace:
        trace = "\nTraceback (most recent call last):\n" + trace.rstrip("\n")
    log("[ERROR] %s: %s%s" % (error["errorType"], error["errorMessage"], trace))


# --------------------------------------------------------------------------------------------
# Loading the handler


def load_handler(spec, task_root):
    modname, _, fname = spec.rpartition(".")
    path = modname.replace("/", ".")
    if not modname or not fname or "" in path.split("."):
        raise Fault("Runtime.MalformedHandlerName",
                    "Bad handler '%s': expected module.function" % spec)
    if path.split(".")[0] in sys.builtin_module_names:
        raise Fault("Runtime.BuiltInModuleConflict",
                    "Cannot use built-in module %s as a handler module" % path.split(".")[0])
    try:
        try:
            module = importlib.import_module(path)
        except ModuleNotFoundError as e:
            # `dir/mod` where `dir` is not importable as a package (say `my-src/app`): import
            # `mod` from that directory instead.
            folder, _, base = modname.rpartition("/")
            if not folder or not e.name or not path.startswith(e.name):
                raise
            folder = os.path.join(task_root, folder)
            if not os.path.isfile(os.path.join(folder, base + ".py")) and not os.path.isdir(
                    os.path.join(folder, base)):
                raise
            sys.path.insert(1, folder)
            module = importlib.import_module(base)
    except ImportError as e:
        raise Fault("Runtime.ImportModuleError",
                    "Unable to import module '%s': %s" % (modname, e)) from None
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, (e.text or "").strip())]
        raise Fault("Runtime.UserCodeSyntaxError",
                    "Syntax error in module '%s': %s" % (modname, e), trace) from None
    handler = getattr(module, fname, None)
    if handler is None or not callable(handler):
        raise Fault("Runtime.HandlerNotFound",
                    "Handler '%s' missing on module '%s'" % (fname, modname))
    return handler


# --------------------------------------------------------------------------------------------
# Invocations


def _json_default(obj):
    # AWS's client serialises Decimal (as boto3's DynamoDB layer returns them) as a number.
    if type(obj).__name__ == "Decimal" and type(obj).__module__ in ("decimal", "_decimal", "_pydecimal"):
        return float(obj)
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def handle_invocation(client, handler, headers, body):
    request_id = headers.get("Lambda-Runtime-Aws-Request-Id")
    if not request_id:
        log("[ERROR] invocation without Lambda-Runtime-Aws-Request-Id; skipped")
        return
    trace_id = headers.get("Lambda-Runtime-Trace-Id")
    if trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    try:
        deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms", ""))
    except ValueError:
        deadline_ms = int(time.time() * 1000) + 900_000
    context = LambdaContext(
        request_id,
        deadline_ms,
        headers.get("Lambda-Runtime-Invoked-Function-Arn"),
        _json_header(headers, "Lambda-Runtime-Cognito-Identity"),
        _json_header(headers, "Lambda-Runtime-Client-Context"),
        headers.get("Lambda-Runtime-Aws-Tenant-Id"),
    )

    try:
        event = json.loads(body) if body.strip() else None
    except ValueError as e:
        fault = Fault("Runtime.UnmarshalError", "Unable to unmarshal input: %s" % e)
        _reply_fault(client, request_id, fault)
        return

    try:
        result = handler(event, context)
    except BaseException as e:  # noqa: BLE001 - SystemExit too: the invocation must get a reply
        error = _error_of_exception(e)
        _log_error(error)
        _flush_std()
        client.post_error(request_id, error, "Unhandled")
        if isinstance(e, (SystemExit, KeyboardInterrupt)):
            sys.exit(e.code if isinstance(e, SystemExit) else 130)
        return

    try:
        payload = json.dumps(result, default=_json_default).encode()
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        _reply_fault(client, request_id,
                     Fault("Runtime.MarshalError", "Unable to marshal response: %s" % e))
        return
    _flush_std()
    client.post_response(request_id, payload)


def _reply_fault(client, request_id, fault):
    error = _error_of_fault(fault)
    _log_error(error)
    _flush_std()
    client.post_error(request_id, error, fault.error_type)


def _flush_std():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


def specialize(client):
    """Deferred start: wait for the function, apply its environment, move to its code. Returns
    the handler spec."""
    # Warm up what is otherwise imported lazily; time spent here is before the function exists.
    import traceback  # noqa: F401

    spec = client.specialization()
    env = spec.get("env") or {}
    os.environ.update({str(k): str(v) for k, v in env.items()})
    os.environ.pop("STRATA_SPECIALIZE", None)
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or DEFAULT_TASK_ROOT
    try:
        os.chdir(task_root)
    except OSError as e:
        log("[ERROR] cannot enter the task root %s: %s" % (task_root, e))
    # The code appeared after the interpreter started: forget any directory listing cached since.
    importlib.invalidate_caches()
    return spec.get("handler") or os.environ.get("_HANDLER", "")


def main():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError):
            pass

    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        log("[ERROR] AWS_LAMBDA_RUNTIME_API is not set")
        return 1
    client = RuntimeClient(address)

    if os.environ.get("STRATA_SPECIALIZE") == "1":
        try:
            handler_spec = specialize(client)
        except Fault as fault:
            log("[ERROR] %s" % fault.message)
            return 1
        task_root = os.environ.get("LAMBDA_TASK_ROOT") or DEFAULT_TASK_ROOT
    else:
        handler_spec = sys.argv[-1] if len(sys.argv) > 1 else os.environ.get("_HANDLER", "")
        task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    here = os.path.dirname(_THIS_FILE)
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
    sys.path.insert(0, task_root)

    try:
        handler = load_handler(handler_spec, task_root)
    except Fault as fault:
        error = _error_of_fault(fault)
    except Exception as e:  # noqa: BLE001 - user code failed at import time
        error = _error_of_exception(e)
    else:
        error = None
    if error is not None:
        _log_error(error)
        _flush_std()
        client.post_init_error(error)
        return 1

    while True:
        try:
            headers, body = client.next()
        except Fault as fault:
            log("[ERROR] %s" % fault.message)
            return 1
        handle_invocation(client, handler, headers, body)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConnectionError, http.client.HTTPException, OSError) as e:
        log("[ERROR] lost the Runtime API at %s: %s"
            % (os.environ.get("AWS_LAMBDA_RUNTIME_API"), e))
        sys.exit(1)
