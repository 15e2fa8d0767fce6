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

Standard library only, and only the modules it needs, so that start-up stays short: the Runtime
API is plain HTTP/1.1 on a local address, spoken by the small client below over a socket rather
than by `http.client`, whose imports (`email.parser`, `ssl`, …) cost more than half of the start-up.
JSON goes through the C functions of `_json` that the `json` module itself uses, because
`import json` pulls in `re` and `enum` (see `_loads`). `traceback` is imported only when an error
is reported, `importlib` only by a deferred start.

The runtime image starts it through `start.py`, which imports this module: a script run as
`python3 FILE` is compiled at every start, an imported module comes from the `__pycache__` the
image build wrote (`python3 -m compileall`).
"""

import os
import sys
import time

try:
    # The C module behind `socket`: the wrapper's imports (enum, selectors, array) are not needed.
    import _socket as _sock
except ImportError:  # pragma: no cover - an interpreter without it
    import socket as _sock

try:
    import _json
except ImportError:  # pragma: no cover - an interpreter without the accelerator
    _json = None

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
# JSON
#
# `json.loads` and `json.dumps` with their default settings parse and write through the C
# scanner and encoder of `_json`; so do these, without importing `json` (and with it `re`, `enum`
# and half a dozen regular expressions compiled at import, about 10 ms of CPU: more than the rest
# of the bootstrap's own start-up). What they do not handle themselves — bytes with a byte-order mark or in UTF-16/32,
# a document that does not parse, an interpreter without `_json` — goes to the `json` module,
# so values and error messages are always `json.loads`'s and `json.dumps`'s.

_JSON_SPACE = " \t\n\r"
_JSON_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _json_module():
    import json

    return json


class _ScanContext:
    """The settings the C scanner reads from its context: json.JSONDecoder()'s defaults."""

    def __init__(self):
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        self.parse_float = float
        self.parse_int = int
        self.parse_constant = _JSON_CONSTANTS.__getitem__
        self.memo = {}


try:
    _scan = _json.make_scanner(_ScanContext())
except Exception:  # noqa: BLE001 - no accelerator, or one that wants other settings
    _scan = None


def _loads(data):
    """`json.loads(data)`."""
    if _scan is None:
        return _json_module().loads(data)
    if isinstance(data, (bytes, bytearray)):
        # json.loads detects UTF-16 and UTF-32 by the zero bytes and accepts a UTF-8 BOM in
        # bytes: all of that is left to it.
        if data[:1] in (b"\xef", b"\xfe", b"\xff") or b"\x00" in data[:4]:
            return _json_module().loads(data)
        try:
            text = data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return _json_module().loads(data)
    elif isinstance(data, str) and not data.startswith("\ufeff"):
        text = data
    else:
        return _json_module().loads(data)
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    try:
        value, end = _scan(text, start)
    except Exception:  # noqa: BLE001 - e.g. StopIteration for "Expecting value"
        # The scanner's own error needs `json.decoder` imported (a SystemError otherwise): the
        # json module parses the document again and raises its exact error.
        return _json_module().loads(data)
    if end != len(text) and text[end:].lstrip(_JSON_SPACE):
        return _json_module().loads(data)  # raises its "Extra data"
    return value


def _not_serializable(obj):
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def _dumps(obj, default=_not_serializable):
    """`json.dumps(obj, default=default)`."""
    encoder = None
    if _json is not None:
        try:
            encoder = _json.make_encoder(
                {}, default, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
            )
        except (AttributeError, TypeError):  # an accelerator with another signature
            encoder = None
    if encoder is None:
        return _json_module().dumps(obj, default=default)
    return "".join(encoder(obj, 0))


# --------------------------------------------------------------------------------------------
# HTTP/1.1 client (plain HTTP: the Runtime API is on a local address; no TLS, no proxies)

_MAX_LINE = 65536  # longest status, header or chunk-size line (as http.client)
_MAX_HEADERS = 100  # most header fields in a response head (as http.client)
_RECV_SIZE = 65536


class HTTPError(Exception):
    """The Runtime API's answer was not valid HTTP/1.1, or a request could not be written."""


class Headers:
    """The header fields of a response. `get` and `[]` are case-insensitive and give the first
    value of a field (None when absent); `get_all` gives every value, in order."""

    __slots__ = ("fields", "_first")

    def __init__(self, fields):
        self.fields = fields  # [(name, value)], as received
        first = {}
        for name, value in fields:
            first.setdefault(name.lower(), value)
        self._first = first

    def get(self, name, default=None):
        return self._first.get(name.lower(), default)

    def __getitem__(self, name):
        return self._first.get(name.lower())

    def __contains__(self, name):
        return name.lower() in self._first

    def get_all(self, name):
        name = name.lower()
        return [value for field, value in self.fields if field.lower() == name]

    def items(self):
        return list(self.fields)

    def __len__(self):
        return len(self.fields)

    def __repr__(self):
        return "Headers(%r)" % (self.fields,)


def _split_address(address):
    """`host:port`, `[v6]:port` or `host` (port 80), as http.client reads them."""
    host, port = address, 80
    colon, bracket = address.rfind(":"), address.rfind("]")
    if colon > bracket:
        digits = address[colon + 1:]
        if digits:
            if not digits.isdigit() or not digits.isascii():
                raise HTTPError("nonnumeric port: '%s'" % digits)
            port = int(digits)
        host = address[:colon]
    if host[:1] == "[" and host[-1:] == "]":
        host = host[1:-1]
    return host, port


def _is_hex(text):
    return 0 < len(text) <= 16 and all(c in b"0123456789abcdefABCDEF" for c in text)


class HTTPConnection:
    """One persistent (keep-alive) HTTP/1.1 connection, opened on first use and reopened after the
    server closed it. Blocking, no timeout: a long poll waits as long as it must."""

    def __init__(self, address):
        self.host, self.port = _split_address(address)
        host = "[%s]" % self.host if ":" in self.host else self.host
        self.host_header = host if self.port == 80 else "%s:%d" % (host, self.port)
        self.sock = None
        self.buf = b""  # received and not yet consumed
        self.received = False  # any byte of the current response has arrived

    def close(self):
        sock, self.sock, self.buf = self.sock, None, b""
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _connect(self):
        error = None
        # An ASCII host goes as bytes: getaddrinfo encodes a str with the "idna" codec, whose
        # imports (stringprep, unicodedata, re) would double the start-up.
        host = self.host.encode("ascii") if self.host.isascii() else self.host
        for family, kind, proto, _, addr in _sock.getaddrinfo(
                host, self.port, 0, _sock.SOCK_STREAM):
            sock = _sock.socket(family, kind, proto)
            try:
                sock.connect(addr)
            except OSError as e:
                sock.close()
                error = e
                continue
            try:
                sock.setsockopt(_sock.IPPROTO_TCP, _sock.TCP_NODELAY, 1)
            except OSError:
                pass
            return sock
        raise error if error is not None else OSError("getaddrinfo returned no address")

    def request(self, method, path, body=None, headers=None):
        """Sends a request, reads the whole response: (status, Headers, body bytes).

        If the connection fails before any byte of the response arrived (typically: the server
        closed the idle keep-alive connection between two requests), it reconnects and sends the
        request once more. A failure after that point is raised: the server has seen the request.
        """
        head = self._encode_head(method, path, body, headers)
        if body and len(body) <= _RECV_SIZE:
            head, body = head + body, None  # one segment for the usual small request
        for attempt in (0, 1):
            self.received = False
            try:
                if self.sock is None:
                    self.sock = self._connect()
                self.sock.sendall(head)
                if body:
                    self.sock.sendall(body)
                return self._read_response(method)
            except BaseException as e:
                self.close()
                if attempt or self.received or not isinstance(e, ConnectionError):
                    raise
        raise AssertionError("unreachable")

    def _encode_head(self, method, path, body, headers):
        path.encode("ascii")  # a request target is ASCII (UnicodeEncodeError, as http.client)
        if " " in path or not path.isprintable():  # (ASCII: not printable = controls and DEL)
            raise HTTPError("URL can't contain control characters. %r" % path)
        lines = ["%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, self.host_header)]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: %d\r\n" % len(body or b""))
        for name, value in (headers or {}).items():
            value = str(value)
            if "\r" in value or "\n" in value or "\0" in value:
                raise ValueError("Invalid header value %r" % value)
            lines.append("%s: %s\r\n" % (name, value))
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    # -- reading ------------------------------------------------------------------------------

    def _recv(self):
        data = self.sock.recv(_RECV_SIZE)
        if data:
            self.received = True
        return data

    def _read_line(self, what):
        """One line of the stream without its (CR)LF."""
        buf = self.buf
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl >= 0:
                break
            if len(buf) > _MAX_LINE:
                raise HTTPError("%s longer than %d bytes" % (what, _MAX_LINE))
            start = len(buf)
            data = self._recv()
            if not data:
                raise HTTPError("connection closed inside the %s" % what)
            buf += data
        self.buf = buf[nl + 1:]
        if nl > _MAX_LINE:
            raise HTTPError("%s longer than %d bytes" % (what, _MAX_LINE))
        return buf[:nl - 1] if nl and buf[nl - 1] == 13 else buf[:nl]

    def _read_head(self):
        """Status line and header fields, up to the empty line; split across reads or not."""
        buf, start = self.buf, 0
        self.received = self.received or bool(buf)
        while True:
            end = buf.find(b"\n\r\n", start)
            end2 = buf.find(b"\n\n", start)
            if end2 >= 0 and (end < 0 or end2 < end):
                end = end2 + 2
            elif end >= 0:
                end += 3
            else:
                if len(buf) > _MAX_LINE * (_MAX_HEADERS + 1):
                    raise HTTPError("response head too long")
                start = max(len(buf) - 2, 0)
                data = self._recv()
                if not data:
                    if not buf:
                        raise ConnectionResetError("Remote end closed connection without response")
                    raise HTTPError("connection closed inside the response head")
                buf += data
                continue
            break
        self.buf = buf[end:]
        lines = buf[:end].decode("latin-1").split("\n")
        del lines[-2:]  # the empty line, and what follows its LF
        status_line = lines[0].rstrip("\r")
        version, _, rest = status_line.partition(" ")
        code, _, _reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit() \
                or not code.isascii():
            raise HTTPError("bad status line %r" % status_line[:200])
        if len(lines) > _MAX_HEADERS + 1:
            raise HTTPError("got more than %d headers" % _MAX_HEADERS)
        fields = []
        for line in lines[1:]:
            if len(line) > _MAX_LINE:
                raise HTTPError("header line longer than %d bytes" % _MAX_LINE)
            line = line.rstrip("\r")
            if line[:1] in (" ", "\t"):
                # Obsolete line folding: a continuation of the previous field's value.
                if not fields:
                    raise HTTPError("bad header line %r" % line[:200])
                name, value = fields[-1]
                fields[-1] = (name, (value + " " + line.strip(" \t")).strip(" \t"))
                continue
            name, colon, value = line.partition(":")
            name = name.strip(" \t")
            if not colon or not name:
                raise HTTPError("bad header line %r" % line[:200])
            fields.append((name, value.strip(" \t")))
        return int(code), version, fields

    def _read_response(self, method):
        while True:
            status, version, fields = self._read_head()
            if not (100 <= status < 200) or status == 101:
                break
            # An interim response (100 Continue, 103 Early Hints…): the final one follows.
        headers = Headers(fields)
        keep_alive = version == "HTTP/1.1"
        for value in headers.get_all("connection"):
            for token in value.lower().split(","):
                token = token.strip()
                if token == "close":
                    keep_alive = False
                elif token == "keep-alive" and version == "HTTP/1.0":
                    keep_alive = True

        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            codings = [c.strip().lower() for v in headers.get_all("transfer-encoding")
                       for c in v.split(",") if c.strip()]
            if codings and codings[-1] == "chunked":
                body = self._read_chunked()
            elif codings:
                body, keep_alive = self._read_to_end(), False
            else:
                length = None
                for value in headers.get_all("content-length"):
                    for item in value.split(","):
                        item = item.strip()
                        if not item.isdigit() or not item.isascii() or (
                                length is not None and int(item) != length):
                            raise HTTPError("bad Content-Length %r" % value)
                        length = int(item)
                if length is None:
                    body, keep_alive = self._read_to_end(), False
                else:
                    body = self._read_exact(length)
        if not keep_alive:
            self.close()
        return status, headers, body

    def _read_exact(self, n):
        buf = self.buf
        if len(buf) >= n:
            self.buf = buf[n:]
            return buf[:n]
        parts, got = [buf], len(buf)
        self.buf = b""
        while got < n:
            data = self.sock.recv(min(n - got, 1 << 20))
            if not data:
                raise HTTPError("connection closed inside the body (%d of %d bytes)" % (got, n))
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def _read_to_end(self):
        parts = [self.buf]
        self.buf = b""
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                return b"".join(parts)
            parts.append(data)

    def _read_chunked(self):
        parts = []
        while True:
            line = self._read_line("chunk size line")
            size = line.split(b";", 1)[0].strip(b" \t")
            if not _is_hex(size):
                raise HTTPError("bad chunk size %r" % line[:100])
            size = int(size, 16)
            if size == 0:
                break
            parts.append(self._read_exact(size))
            if self._read_line("chunk") != b"":
                raise HTTPError("chunk data not followed by CRLF")
        for _ in range(_MAX_HEADERS + 1):  # trailer fields, up to the empty line
            if not self._read_line("trailer"):
                return b"".join(parts)
        raise HTTPError("got more than %d trailer fields" % _MAX_HEADERS)


# --------------------------------------------------------------------------------------------
# Runtime API client


class RuntimeClient:
    """A persistent HTTP/1.1 connection to the instance agent. No timeout: /next blocks."""

    def __init__(self, address):
        self.address = address
        self.conn = HTTPConnection(address)

    def _request(self, method, path, body=None, headers=None):
        return self.conn.request(method, path, body, headers)

    def specialization(self):
        """Blocks until the instance is specialized; returns the decoded answer."""
        status, _, body = self._request("GET", SPECIALIZATION)
        if status != 200:
            raise Fault(
                "Runtime.ApiError",
                "GET %s returned %d: %s" % (SPECIALIZATION, status, body.decode("utf-8", "replace")),
            )
        try:
            spec = _loads(body)
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
        body = _dumps(error).encode()
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
        value = _loads(raw)
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


def _import(name):
    """`importlib.import_module(name)` for an absolute name, without importing importlib."""
    __import__(name)
    return sys.modules[name]


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
            module = _import(path)
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
            module = _import(base)
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
        event = _loads(body) if body.strip() else None
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
        payload = _dumps(result, default=_json_default).encode()
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
    import importlib
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


def run():
    """Runs the bootstrap and exits with its status."""
    try:
        sys.exit(main())
    except (HTTPError, OSError) as e:
        log("[ERROR] lost the Runtime API at %s: %s"
            % (os.environ.get("AWS_LAMBDA_RUNTIME_API"), e))
        sys.exit(1)


if __name__ == "__main__":
    run()
