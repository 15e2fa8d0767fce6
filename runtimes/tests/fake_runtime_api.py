"""A fake of the Runtime API (2018-06-01) that Strata's instance agent serves, for testing the
bootstraps: it hands out queued events with the real headers and records what comes back."""

import json
import os
import queue
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"
SPECIALIZATION = "/2018-06-01/strata/specialization"
FUNCTION_NAME = "hello"


class FakeRuntimeAPI:
    def __init__(self):
        self.events = queue.Queue()
        self.cond = threading.Condition()
        self.results = {}  # request id -> list of {"kind", "body", "headers"}
        self.init_errors = []  # list of {"body", "headers"}
        self.requests = []  # every request: {"method", "path", "client", "time"}
        self.stopping = threading.Event()
        self.specialization = None  # the answer of GET SPECIALIZATION, once specialize() is called
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real agent
            # As the real agent: TCP_NODELAY, and each response (head and body) in one write.
            # Unbuffered, the head and the body went out in two segments and Nagle's algorithm
            # held the second one until the client's delayed ACK (~40 ms per response).
            disable_nagle_algorithm = True
            wbufsize = -1  # buffered; handle_one_request() flushes after each request

            def log_message(self, *args):
                pass

            def _reply(self, status, body=b"", headers=None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _note(self):
                with api.cond:
                    api.requests.append({
                        "method": self.command,
                        "path": self.path,
                        "client": self.client_address,
                        "time": time.monotonic(),
                    })
                    api.cond.notify_all()

            def _peer_gone(self):
                """The client closed its connection (say, the bootstrap was killed)."""
                try:
                    readable, _, _ = select.select([self.connection], [], [], 0)
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                except (OSError, ValueError):
                    return True

            def do_GET(self):
                self._note()
                if self.path == SPECIALIZATION:
                    with api.cond:
                        while api.specialization is None and not api.stopping.is_set():
                            api.cond.wait(0.1)
                        answer = api.specialization
                    if answer is None:
                        return self._reply(500, b'{"errorMessage":"shutting down"}')
                    return self._reply(200, json.dumps(answer).encode(),
                                       {"Content-Type": "application/json"})
                if self.path != PREFIX + "/invocation/next":
                    return self._reply(404, b'{"errorMessage":"not found"}')
                while True:
                    if self._peer_gone():
                        return  # killed while waiting: leave the events to its successor
                    try:
                        item = api.events.get(timeout=0.1)
                    except queue.Empty:
                        if api.stopping.is_set():
                            return self._reply(500, b'{"errorMessage":"shutting down"}')
                        continue
                    if not self._peer_gone():
                        break
                    # Its client died meanwhile (a test killed it): put the event back in front.
                    with api.events.mutex:
                        api.events.queue.appendleft(item)
                        api.events.not_empty.notify()
                    return
                request_id, body, headers = item
                self._reply(200, body, headers)

            def do_POST(self):
                self._note()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if self.path == PREFIX + "/init/error":
                    with api.cond:
                        api.init_errors.append({"body": body, "headers": headers})
                        api.cond.notify_all()
                    return self._reply(202, b'{"status":"OK"}')
                parts = self.path[len(PREFIX):].split("/")  # ['', 'invocation', id, kind]
                if len(parts) != 4 or parts[1] != "invocation" or parts[3] not in ("response", "error"):
                    return self._reply(404, b'{"errorMessage":"not found"}')
                with api.cond:
                    seen = api.results.setdefault(parts[2], [])
                    seen.append({"kind": parts[3], "body": body, "headers": headers})
                    api.cond.notify_all()
                    duplicate = len(seen) > 1
                if duplicate:
                    return self._reply(403, b'{"errorMessage":"invalid state"}')
                self._reply(202, b'{"status":"OK"}')

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                # A bootstrap killed at the end of a test drops its connection: not an error.
                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.address = "127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def specialize(self, handler, env, function=FUNCTION_NAME):
        """Answers (now and later) the deferred bootstrap's GET of the specialization endpoint."""
        with self.cond:
            self.specialization = {"function": function, "handler": handler, "env": dict(env)}
            self.cond.notify_all()

    def specialization_requests(self):
        with self.cond:
            return [r for r in self.requests if r["path"] == SPECIALIZATION]

    def push(self, event=None, raw=None, timeout_ms=30000, extra_headers=None, trace_id=None):
        """Queues an invocation; returns its request id."""
        request_id = str(uuid.uuid4())
        body = raw if raw is not None else json.dumps(event).encode()
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + timeout_ms),
            "Lambda-Runtime-Invoked-Function-Arn":
                "arn:aws:lambda:local:000000000000:function:" + FUNCTION_NAME,
            "Lambda-Runtime-Trace-Id": trace_id or ("Root=1-%s;Parent=%s;Sampled=0" % (
                request_id[:8], request_id[-16:])),
        }
        headers.update(extra_headers or {})
        self.events.put((request_id, body, headers))
        return request_id

    def wait(self, predicate, timeout=15):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def wait_result(self, request_id, timeout=15):
        """The first reply posted for an invocation: {"kind", "body", "headers"}, or None."""
        found = self.wait(lambda: self.results.get(request_id), timeout)
        return found[0] if found else None

    def wait_init_error(self, timeout=15):
        found = self.wait(lambda: self.init_errors, timeout)
        return found[0] if found else None

    def next_requests(self):
        with self.cond:
            return [r for r in self.requests
                    if r["method"] == "GET" and r["path"] == PREFIX + "/invocation/next"]


def function_env(api, handler, task_root, extra=None):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": task_root,
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/" + FUNCTION_NAME,
        "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]0123456789abcdef",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": "local",
        "TZ": ":UTC",
    }
    env.update(extra or {})
    return env


def generic_env(api, extra=None):
    """The environment of a generic instance's deferred bootstrap: no function yet."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "STRATA_SPECIALIZE": "1",
        "TZ": ":UTC",
    }
    env.update(extra or {})
    return env


def start_generic_bootstrap(command, api, cwd, extra_env=None):
    """Starts a deferred bootstrap as the agent does for a generic instance: ENTRYPOINT without
    a handler. Returns (process, stdout file, stderr file)."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=generic_env(api, extra_env),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
    )
    return proc, out, err


def start_bootstrap(command, api, handler, task_root, extra_env=None, pass_handler_arg=True):
    """Starts a bootstrap as the platform does: ENTRYPOINT + [handler], cwd = task root.
    Returns (process, stdout file, stderr file)."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    argv = list(command) + ([handler] if pass_handler_arg else [])
    proc = subprocess.Popen(
        argv,
        cwd=task_root,
        env=function_env(api, handler, task_root, extra_env),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
    )
    return proc, out, err


def read_file(f):
    f.seek(0)
    return f.read().decode("utf-8", "replace")
