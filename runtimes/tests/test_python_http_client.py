"""Tests of the Python bootstrap's own HTTP/1.1 client (HTTPConnection / RuntimeClient in
runtimes/python3/bootstrap/strata_bootstrap.py): against the fake Runtime API, and against a raw
socket server that sends tricky but legal responses (chunked bodies, heads split across reads,
repeated and oddly-cased headers, Connection: close, interim responses, …) and a few bad ones.

Run from the repository root:  python3 -m unittest discover -s runtimes/tests -v
"""

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import shutil
import tempfile
import threading
import time
import unittest
import unittest.mock

from fake_runtime_api import FakeRuntimeAPI, function_env, read_file, start_bootstrap

HERE = os.path.dirname(os.path.abspath(__file__))
PY_BOOTSTRAP = os.path.join(os.path.dirname(HERE), "python3", "bootstrap", "strata_bootstrap.py")


def load_bootstrap():
    spec = importlib.util.spec_from_file_location("strata_bootstrap_under_test", PY_BOOTSTRAP)
    module = importlib.util.module_from_spec(spec)
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ there
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


sb = load_bootstrap()


class Reply:
    """What the raw server sends for one request: `pieces` written one by one with a pause in
    between (so that the client gets them in separate reads), then the connection is closed if
    `close` (or if there are no pieces at all: closed without a response)."""

    def __init__(self, *pieces, close=False, pause=0.01):
        self.pieces = [p.encode("latin-1") if isinstance(p, str) else p for p in pieces]
        self.close = close or not pieces
        self.pause = pause


def split_bytes(data, size=1):
    return [data[i:i + size] for i in range(0, len(data), size)]


class RawServer:
    """A TCP server on 127.0.0.1 that reads HTTP/1.1 requests (Content-Length bodies) and answers
    each with the next scripted Reply, whatever was asked. Records (connection number, method,
    path, raw head, body) per request."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests = []
        self.connections = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self.listener.close()

    def _serve(self):
        while self.replies:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._serve_connection(conn, self.connections)

    def _serve_connection(self, conn, number):
        buf = b""
        while self.replies:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            while len(buf) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            body, buf = buf[:length], buf[length:]
            self.requests.append({"connection": number, "method": method, "path": path,
                                  "head": head.decode("latin-1"), "body": body})
            reply = self.replies.pop(0)
            for i, piece in enumerate(reply.pieces):
                if i:
                    time.sleep(reply.pause)
                conn.sendall(piece)
            if reply.close:
                return


class RawServerTestCase(unittest.TestCase):
    def serve(self, *replies):
        server = RawServer(replies)
        self.addCleanup(server.close)
        conn = sb.HTTPConnection(server.address)
        self.addCleanup(conn.close)
        return server, conn


class HTTPConnectionTest(RawServerTestCase):
    def test_request_format_and_keep_alive(self):
        server, conn = self.serve(
            Reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
            Reply("HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"),
        )
        status, headers, body = conn.request("GET", "/2018-06-01/runtime/invocation/next")
        self.assertEqual((status, body), (200, b"hi"))
        status, _, body = conn.request("POST", "/2018-06-01/runtime/invocation/a-b/response",
                                       b'{"x": 1}', {"Content-Type": "application/json",
                                                      "Lambda-Runtime-Function-Error-Type": "E"})
        self.assertEqual((status, body), (202, b""))
        get, post = server.requests
        self.assertEqual(get["head"], "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n"
                                      "Host: %s" % server.address)
        self.assertEqual(get["body"], b"")
        self.assertEqual(post["head"], "POST /2018-06-01/runtime/invocation/a-b/response HTTP/1.1\r\n"
                                       "Host: %s\r\nContent-Length: 8\r\n"
                                       "Content-Type: application/json\r\n"
                                       "Lambda-Runtime-Function-Error-Type: E" % server.address)
        self.assertEqual(post["body"], b'{"x": 1}')
        self.assertEqual([get["connection"], post["connection"]], [1, 1], "one connection")
        self.assertNotEqual(conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 0)

    def test_chunked_body_with_extensions_and_trailers_in_awkward_pieces(self):
        raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n"
               b"\r\n5;name=value\r\n{\"a\":\r\n1A\r\n \"abcdefghijklmnopqrstuv\"}\r\n"
               b"0\r\nX-Trailer: 1\r\n\r\n")
        expected = b'{"a": "abcdefghijklmnopqrstuv"}'
        for size in (1, 2, 3, 7, len(raw)):
            with self.subTest(piece_size=size):
                server, conn = self.serve(
                    Reply(*split_bytes(raw, size), pause=0.001),
                    Reply("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext"))
                status, headers, body = conn.request("GET", "/a")
                self.assertEqual((status, body), (200, expected))
                self.assertEqual(headers.get("content-type"), "application/json")
                # The trailers were consumed: the connection is usable for the next response.
                self.assertEqual(conn.request("GET", "/b")[2], b"next")
                self.assertEqual(server.connections, 1)

    def test_chunked_body_larger_than_a_read(self):
        data = os.urandom(300_000)
        chunks = [data[i:i + 70_000] for i in range(0, len(data), 70_000)]
        raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        raw += b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        # (The codings before `chunked` are the server's business: the body is returned as is.)
        _, conn = self.serve(Reply(*split_bytes(raw, 50_000), pause=0.001))
        self.assertEqual(conn.request("GET", "/big")[2], data)

    def test_head_split_across_reads_and_extra_headers(self):
        raw = ("HTTP/1.1 200 OK\r\n"
               "Lambda-Runtime-Aws-Request-Id:  8476a536-e9f4-11e8-9739-2dfe598c3fcd \r\n"
               "lambda-runtime-deadline-ms:1542409706888\r\n"
               "X-Repeated: first\r\n"
               "Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
               "x-repeated: second\r\n"
               "X-Empty:\r\n"
               "Content-Length: 9\r\n"
               "\r\n"
               '{"k": 1}\n').encode()
        for cut in (raw.index(b"\r\n") + 1, raw.index(b"\r\n\r\n") + 1,
                    raw.index(b"\r\n\r\n") + 2, raw.index(b"\r\n\r\n") + 3, 5):
            with self.subTest(cut=cut):
                _, conn = self.serve(Reply(raw[:cut], raw[cut:]))
                status, headers, body = conn.request("GET", "/")
                self.assertEqual((status, body), (200, b'{"k": 1}\n'))
                self.assertEqual(headers.get("Lambda-Runtime-Aws-Request-Id"),
                                 "8476a536-e9f4-11e8-9739-2dfe598c3fcd")
                self.assertEqual(headers["LAMBDA-RUNTIME-DEADLINE-MS"], "1542409706888")
                self.assertEqual(headers.get("x-repeated"), "first")
                self.assertEqual(headers.get_all("X-Repeated"), ["first", "second"])
                self.assertEqual(headers.get("x-empty"), "")
                self.assertIn("date", headers)
                self.assertIsNone(headers.get("missing"))
                self.assertIsNone(headers["missing"])
                self.assertEqual(headers.get("missing", "d"), "d")
        # Byte by byte, head and body.
        _, conn = self.serve(Reply(*split_bytes(raw), pause=0.0005))
        self.assertEqual(conn.request("GET", "/")[2], b'{"k": 1}\n')

    def test_lenient_forms(self):
        cases = [
            # bare LF line endings
            (b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", 200, b"abc"),
            # no reason phrase (the agent writes "HTTP/1.1 201 \r\n" for codes it has no name for)
            (b"HTTP/1.1 201 \r\nContent-Length: 1\r\n\r\nx", 201, b"x"),
            (b"HTTP/1.1 299\r\nContent-Length: 1\r\n\r\ny", 299, b"y"),
            # repeated identical Content-Length
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok", 200, b"ok"),
            # obsolete line folding
            (b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\nContent-Length: 0\r\n\r\n", 200, b""),
            # 204 has no body whatever it says
            (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b""),
        ]
        for raw, status, body in cases:
            with self.subTest(raw=raw):
                _, conn = self.serve(Reply(raw), Reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
                got_status, headers, got_body = conn.request("GET", "/")
                self.assertEqual((got_status, got_body), (status, body))
                if b"Folded" in raw:
                    self.assertEqual(headers.get("x-folded"), "a b")
                self.assertEqual(conn.request("GET", "/")[2], b"ok", "connection still in sync")

    def test_interim_responses_are_skipped(self):
        _, conn = self.serve(Reply("HTTP/1.1 100 Continue\r\n\r\n",
                                   "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                                   "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}"))
        status, headers, body = conn.request("POST", "/", b"{}")
        self.assertEqual((status, body), (202, b"{}"))
        self.assertIsNone(headers.get("link"))

    def test_connection_close_response_then_reconnects(self):
        server, conn = self.serve(
            Reply("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 5\r\n\r\nnope!",
                  close=True),
            Reply("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes"),
            Reply("HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n1.0!", close=True),
            Reply("HTTP/1.1 200 OK\r\n\r\nuntil the end", close=True),
            Reply("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nka"),
            Reply("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast"),
        )
        self.assertEqual(conn.request("GET", "/1")[::2], (400, b"nope!"))
        self.assertIsNone(conn.sock, "closed after a Connection: close response")
        self.assertEqual(conn.request("GET", "/2")[2], b"yes")
        self.assertEqual(conn.request("GET", "/3")[2], b"1.0!")  # HTTP/1.0: closes by default
        self.assertEqual(conn.request("GET", "/4")[2], b"until the end")  # no length: to EOF
        self.assertEqual(conn.request("GET", "/5")[2], b"ka")
        self.assertEqual(conn.request("GET", "/6")[2], b"last")
        self.assertEqual([r["connection"] for r in server.requests], [1, 2, 2, 3, 4, 4])
        self.assertEqual([r["path"] for r in server.requests], ["/1", "/2", "/3", "/4", "/5", "/6"])

    def test_idle_connection_closed_by_the_peer_is_reopened_once(self):
        server, conn = self.serve(
            # Answers and closes without saying so: the client learns it on its next request.
            Reply("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", close=True),
            Reply("HTTP/1.1 202 Accepted\r\nContent-Length: 1\r\n\r\nb"),
        )
        self.assertEqual(conn.request("GET", "/first")[2], b"a")
        time.sleep(0.05)  # the FIN has arrived
        self.assertEqual(conn.request("POST", "/second", b"payload")[2], b"b")
        self.assertEqual([(r["connection"], r["path"]) for r in server.requests],
                         [(1, "/first"), (2, "/second")])
        self.assertEqual(server.requests[1]["body"], b"payload")

    def test_gives_up_after_one_reconnection(self):
        server, conn = self.serve(Reply(), Reply(), Reply("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        with self.assertRaises(ConnectionError):
            conn.request("GET", "/")
        self.assertEqual(server.connections, 2)
        self.assertIsNone(conn.sock)
        self.assertEqual(conn.request("GET", "/again")[0], 200, "usable afterwards")

    def test_connection_refused(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        address = "127.0.0.1:%d" % sock.getsockname()[1]
        sock.close()
        with self.assertRaises(ConnectionRefusedError):
            sb.HTTPConnection(address).request("GET", "/")

    def test_no_retry_once_the_response_has_started(self):
        # The server has seen the request: sending it again could run it twice.
        bad = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "inside the body"),
            ("HTTP/1.1 200 OK\r\nContent-Le", "inside the response head"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "inside the body"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n",
             "not followed by CRLF"),
            ("ICY 200 OK\r\n\r\n", "bad status line"),
            ("HTTP/1.1 2000 OK\r\n\r\n", "bad status line"),
            ("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad header line"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
             "bad Content-Length"),
            ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        ]
        for raw, message in bad:
            with self.subTest(raw=raw):
                server, conn = self.serve(Reply(raw, close=True), Reply("HTTP/1.1 200 OK\r\n\r\n"))
                with self.assertRaisesRegex(sb.HTTPError, message):
                    conn.request("GET", "/")
                self.assertEqual(len(server.requests), 1)
                self.assertIsNone(conn.sock)

    def test_large_request_and_response_bodies(self):
        payload = os.urandom(1_000_000)
        server, conn = self.serve(
            Reply(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload),
                  payload[:100_000], payload[100_000:]),
            Reply("HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"),
        )
        self.assertEqual(conn.request("GET", "/")[2], payload)
        self.assertEqual(conn.request("POST", "/", payload)[0], 202)
        self.assertEqual(server.requests[1]["body"], payload)

    def test_bad_requests_are_refused_before_sending(self):
        server, conn = self.serve(Reply("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        with self.assertRaises(sb.HTTPError):
            conn.request("GET", "/a b")
        with self.assertRaises(ValueError):
            conn.request("POST", "/", b"", {"X-Injected": "a\r\nEvil: 1"})
        with self.assertRaises(UnicodeEncodeError):
            conn.request("GET", "/\u00e9")
        self.assertEqual(conn.request("GET", "/ok")[0], 200)
        self.assertEqual([r["path"] for r in server.requests], ["/ok"])

    def test_addresses(self):
        cases = {
            "127.0.0.1:9001": ("127.0.0.1", 9001, "127.0.0.1:9001"),
            "localhost": ("localhost", 80, "localhost"),
            "localhost:": ("localhost", 80, "localhost"),
            "[::1]:9001": ("::1", 9001, "[::1]:9001"),
            "[::1]": ("::1", 80, "[::1]"),
        }
        for address, (host, port, host_header) in cases.items():
            with self.subTest(address=address):
                conn = sb.HTTPConnection(address)
                self.assertEqual((conn.host, conn.port, conn.host_header), (host, port, host_header))
        with self.assertRaisesRegex(sb.HTTPError, "nonnumeric port"):
            sb.HTTPConnection("localhost:http")


class RuntimeClientAgainstFakeAPITest(unittest.TestCase):
    def setUp(self):
        self.api = FakeRuntimeAPI()
        self.addCleanup(self.api.close)
        self.client = sb.RuntimeClient(self.api.address)
        self.addCleanup(self.client.conn.close)

    def test_next_response_error_and_init_error_on_one_connection(self):
        first = self.api.push({"n": 1}, extra_headers={"Lambda-Runtime-Client-Context": "{}"})
        headers, body = self.client.next()
        self.assertEqual(json.loads(body), {"n": 1})
        self.assertEqual(headers.get("lambda-runtime-aws-request-id"), first)
        self.assertEqual(headers.get("Lambda-Runtime-Aws-Request-Id"), first)
        self.assertEqual(headers.get("Lambda-Runtime-Client-Context"), "{}")
        self.assertTrue(headers.get("Lambda-Runtime-Deadline-Ms").isdigit())
        self.client.post_response(first, b'{"ok": true}')
        result = self.api.wait_result(first)
        self.assertEqual((result["kind"], result["body"]), ("response", b'{"ok": true}'))
        self.assertEqual(result["headers"]["content-type"], "application/json")

        second = self.api.push(raw=b"")
        headers, body = self.client.next()
        self.assertEqual((headers.get("Lambda-Runtime-Aws-Request-Id"), body), (second, b""))
        error = {"errorMessage": "m", "errorType": "T", "stackTrace": []}
        self.client.post_error(second, error, "Unhandled")
        result = self.api.wait_result(second)
        self.assertEqual(result["kind"], "error")
        self.assertEqual(json.loads(result["body"]), error)
        self.assertEqual(result["headers"]["lambda-runtime-function-error-type"], "Unhandled")
        self.assertEqual(result["headers"]["content-type"], "application/vnd.aws.lambda.error+json")

        self.client.post_init_error(error)
        init = self.api.wait_init_error()
        self.assertEqual(init["headers"]["lambda-runtime-function-error-type"], "T")
        self.assertEqual({r["client"] for r in self.api.requests}, {self.api.requests[0]["client"]})

    def test_specialization(self):
        self.api.specialize("app.handler", {"A": "1"})
        self.assertEqual(self.client.specialization(),
                         {"function": "hello", "handler": "app.handler", "env": {"A": "1"}})

    def test_api_errors_are_faults(self):
        self.assertEqual(self.client._request("GET", "/nowhere")[0], 404)
        self.api.stopping.set()  # /next then answers 500
        with self.assertRaises(sb.Fault) as caught:
            self.client.next()
        self.assertEqual(caught.exception.error_type, "Runtime.ApiError")
        self.assertIn("500", caught.exception.message)

    def test_duplicate_post_is_logged_not_raised(self):
        request_id = self.api.push({})
        self.client.next()
        self.client.post_response(request_id, b"1")
        with unittest.mock.patch("sys.stderr", io.StringIO()) as stderr:
            self.client.post_response(request_id, b"2")  # 403 from the API: logged only
        self.assertIn("returned 403", stderr.getvalue())
        self.assertEqual(len(self.api.results[request_id]), 2)


class PythonBootstrapStartupTest(unittest.TestCase):
    """What the bootstrap imports on its way to serving invocations: none of http.client's
    dependencies, and not the modules that are imported only when they are needed."""

    NOT_AT_STARTUP = ("http", "email", "ssl", "urllib", "socket", "selectors", "traceback",
                      "decimal", "linecache", "tokenize", "base64", "calendar", "json", "re",
                      "enum", "importlib", "stringprep", "unicodedata", "encodings.idna")

    def test_no_heavy_imports(self):
        api = FakeRuntimeAPI()
        self.addCleanup(api.close)
        task_root = tempfile.mkdtemp(prefix="strata-task-")
        self.addCleanup(shutil.rmtree, task_root, True)
        with open(os.path.join(task_root, "app.py"), "w") as f:
            f.write("def handler(event, context):\n    return event\n")
        proc, out, err = start_bootstrap([sys.executable, "-X", "importtime", "-u", PY_BOOTSTRAP],
                                         api, "app.handler", task_root)
        self.addCleanup(out.close)
        self.addCleanup(err.close)
        try:
            for n in range(3):
                request_id = api.push({"n": n})
                result = api.wait_result(request_id)
                self.assertIsNotNone(result, read_file(err))
                self.assertEqual(json.loads(result["body"]), {"n": n})
        finally:
            proc.kill()
            proc.wait(5)
        imported = self.modules(read_file(err))
        # What the interpreter imports before any script (site, .pth files) is not ours.
        baseline = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"],
                                  cwd=task_root, env=function_env(api, "app.handler", task_root),
                                  capture_output=True, text=True, check=True)
        imported -= self.modules(baseline.stderr)
        self.assertIn("_json", imported)
        heavy = sorted(m for m in imported
                       if m in self.NOT_AT_STARTUP or m.split(".")[0] in self.NOT_AT_STARTUP)
        self.assertEqual(heavy, [], "imported by the bootstrap: %s" % heavy)

    @staticmethod
    def modules(importtime_output):
        return {line.split("|")[2].strip() for line in importtime_output.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}


if __name__ == "__main__":
    unittest.main()
