"""Tests of Strata's built-in bootstraps (runtimes/python3/bootstrap, runtimes/nodejs/bootstrap)
against a fake Runtime API.

Run from the repository root:  python3 -m unittest discover -s runtimes/tests -v
Node.js cases are skipped (with the reason printed) when `node` is not on PATH.
"""

import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
import unittest

from fake_runtime_api import FakeRuntimeAPI, read_file, start_bootstrap, start_generic_bootstrap

HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIMES = os.path.dirname(HERE)
PY_BOOTSTRAP = os.path.join(RUNTIMES, "python3", "bootstrap", "strata_bootstrap.py")
NODE_BOOTSTRAP = os.path.join(RUNTIMES, "nodejs", "bootstrap", "strata_bootstrap.mjs")
NODE = shutil.which("node")

ERROR_CT = "application/vnd.aws.lambda.error+json"


class BootstrapTestCase(unittest.TestCase):
    command = None  # ENTRYPOINT of the runtime, without the handler

    def setUp(self):
        self.api = FakeRuntimeAPI()
        self.addCleanup(self.api.close)
        self.task_root = tempfile.mkdtemp(prefix="strata-task-")
        self.addCleanup(shutil.rmtree, self.task_root, True)
        self.proc = None

    def tearDown(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def write(self, relpath, text):
        path = os.path.join(self.task_root, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text).lstrip())

    def start(self, handler, extra_env=None, pass_handler_arg=True):
        self.proc, self.out, self.err = start_bootstrap(
            self.command, self.api, handler, self.task_root, extra_env, pass_handler_arg)
        self.addCleanup(self.out.close)
        self.addCleanup(self.err.close)
        return self.proc

    def logs(self):
        return "--- stdout ---\n%s\n--- stderr ---\n%s" % (read_file(self.out), read_file(self.err))

    def invoke(self, event=None, **kw):
        """Queues one invocation and waits for its reply: (kind, decoded body, headers)."""
        request_id = self.api.push(event, **kw)
        result = self.api.wait_result(request_id)
        self.assertIsNotNone(result, "no reply for %s\n%s" % (request_id, self.logs()))
        return result["kind"], json.loads(result["body"]), result["headers"]

    def ok(self, event=None, **kw):
        kind, body, headers = self.invoke(event, **kw)
        self.assertEqual(kind, "response", "%s\n%s" % (body, self.logs()))
        self.assertEqual(headers.get("content-type"), "application/json")
        return body

    def failed(self, event=None, **kw):
        kind, body, headers = self.invoke(event, **kw)
        self.assertEqual(kind, "error", "%s\n%s" % (body, self.logs()))
        self.assertEqual(headers.get("content-type"), ERROR_CT)
        self.assertIn("lambda-runtime-function-error-type", headers)
        for key in ("errorType", "errorMessage", "stackTrace"):
            self.assertIn(key, body)
        self.assertIsInstance(body["stackTrace"], list)
        return body, headers

    def init_failed(self):
        err = self.api.wait_init_error()
        self.assertIsNotNone(err, "no init error\n" + self.logs())
        self.assertEqual(err["headers"].get("content-type"), ERROR_CT)
        body = json.loads(err["body"])
        self.assertEqual(err["headers"].get("lambda-runtime-function-error-type"), body["errorType"])
        self.assertEqual(self.proc.wait(10), 1, self.logs())
        return body

    def assert_exits(self, code=1):
        self.assertEqual(self.proc.wait(10), code, self.logs())


class DeferredTests:
    """Deferred start (STRATA_SPECIALIZE=1), for both bootstraps. A subclass sets `command`,
    `app_file` and `app_code` (a handler `handler` that returns its event, environment, working
    directory and context.function_name) and `app_handler`."""

    ENV_KEYS = ["MY_VAR", "AWS_LAMBDA_FUNCTION_NAME", "_HANDLER", "LAMBDA_TASK_ROOT",
                "STRATA_SPECIALIZE", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]

    def start_generic(self, extra_args=(), extra_env=None):
        """Starts the bootstrap as a generic instance's: no function, elsewhere than its code."""
        cwd = tempfile.mkdtemp(prefix="strata-cwd-")
        self.addCleanup(shutil.rmtree, cwd, True)
        self.proc, self.out, self.err = start_generic_bootstrap(
            list(self.command) + list(extra_args), self.api, cwd, extra_env)
        self.addCleanup(self.out.close)
        self.addCleanup(self.err.close)

    def function_env(self, handler, **extra):
        env = {
            "LAMBDA_TASK_ROOT": self.task_root,
            "AWS_LAMBDA_FUNCTION_NAME": "hello",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/hello",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]0123456789abcdef",
            "_HANDLER": handler,
            "MY_VAR": "from the specialization",
        }
        env.update(extra)
        return env

    def assert_waiting(self):
        asked = self.api.wait(lambda: self.api.specialization_requests())
        self.assertTrue(asked, "the bootstrap never asked for its specialization\n" + self.logs())
        time.sleep(0.2)
        self.assertIsNone(self.proc.poll(), "the bootstrap must wait\n" + self.logs())
        self.assertEqual(self.api.next_requests(), [], "no /next before the specialization")
        self.assertEqual(self.api.init_errors, [])

    def test_deferred_start_waits_then_serves_with_the_function_env(self):
        self.start_generic()
        self.assert_waiting()
        # The code shows up only now (the server mounts it), then the instance is specialized.
        self.write(self.app_file, self.app_code)
        self.api.specialize(self.app_handler, self.function_env(self.app_handler))
        body = self.ok({"k": 1})
        self.assertEqual(body["event"], {"k": 1})
        self.assertEqual(body["function_name"], "hello")
        self.assertEqual(body["env"], {
            "MY_VAR": "from the specialization", "AWS_LAMBDA_FUNCTION_NAME": "hello",
            "_HANDLER": self.app_handler, "LAMBDA_TASK_ROOT": self.task_root,
            "STRATA_SPECIALIZE": None, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256"})
        self.assertEqual(os.path.realpath(body["cwd"]), os.path.realpath(self.task_root))
        # Same process, same connection, next invocation.
        self.assertEqual(self.ok({"k": 2})["event"], {"k": 2})
        self.assertEqual(len(self.api.specialization_requests()), 1)
        clients = {r["client"] for r in self.api.requests}
        self.assertEqual(len(clients), 1, "one keep-alive connection expected: %s" % clients)

    def test_deferred_handler_comes_from_the_payload_not_argv(self):
        self.write(self.app_file, self.app_code)
        self.start_generic(extra_args=["wrong.handler"], extra_env={"_HANDLER": "wrong.handler"})
        self.assert_waiting()
        env = self.function_env(self.app_handler)
        del env["_HANDLER"]
        self.api.specialize(self.app_handler, env)
        body = self.ok({})
        self.assertEqual(body["env"]["MY_VAR"], "from the specialization")

    def test_deferred_init_error_is_reported_as_in_direct_mode(self):
        self.start_generic()
        self.assert_waiting()
        self.api.specialize("nothere.handler", self.function_env("nothere.handler"))
        body = self.init_failed()
        self.assertEqual(body["errorType"], "Runtime.ImportModuleError")
        self.assertIn("nothere", body["errorMessage"])
        self.assertEqual(self.api.next_requests(), [])

    def test_deferred_task_root_defaults_to_var_task(self):
        self.start_generic()
        self.assert_waiting()
        env = self.function_env("nothere.handler")
        del env["LAMBDA_TASK_ROOT"]
        self.api.specialize("nothere.handler", env)
        self.init_failed()
        if not os.path.isdir("/var/task"):
            self.assertIn("/var/task", read_file(self.err))


# ============================================================================================
# Python


class PythonBootstrapTest(BootstrapTestCase):
    command = [sys.executable, "-u", PY_BOOTSTRAP]

    def test_returns_value(self):
        self.write("app.py", """
            def handler(event, context):
                return {"echo": event, "unicode": "h\u00e9llo"}
        """)
        self.start("app.handler")
        body = self.ok({"a": [1, 2, {"b": None}]})
        self.assertEqual(body, {"echo": {"a": [1, 2, {"b": None}]}, "unicode": "h\u00e9llo"})
        self.assertIsNone(self.ok(None)["echo"])

    def test_exception_reports_error_and_keeps_serving(self):
        self.write("app.py", """
            def helper(x):
                raise ValueError("bad value: %s" % x)

            def handler(event, context):
                if event.get("fail"):
                    helper(event["fail"])
                return "fine"
        """)
        self.start("app.handler")
        body, headers = self.failed({"fail": 42})
        self.assertEqual(body["errorType"], "ValueError")
        self.assertEqual(body["errorMessage"], "bad value: 42")
        self.assertEqual(headers["lambda-runtime-function-error-type"], "Unhandled")
        trace = "".join(body["stackTrace"])
        self.assertIn("app.py", trace)
        self.assertIn("in helper", trace)
        self.assertNotIn("strata_bootstrap", trace)
        self.assertIn("ValueError", read_file(self.err))
        self.assertEqual(self.ok({}), "fine")

    def test_env_vars(self):
        self.write("app.py", """
            import os, sys
            def handler(event, context):
                keys = ["MY_VAR", "AWS_REGION", "_HANDLER", "LAMBDA_TASK_ROOT", "_X_AMZN_TRACE_ID",
                        "AWS_LAMBDA_FUNCTION_NAME"]
                return {"env": {k: os.environ.get(k) for k in keys}, "cwd": os.getcwd(),
                        "path0": sys.path[0]}
        """)
        self.start("app.handler", {"MY_VAR": "xyz"})
        body = self.ok({}, trace_id="Root=1-abc;Sampled=1")
        self.assertEqual(body["env"], {
            "MY_VAR": "xyz", "AWS_REGION": "local", "_HANDLER": "app.handler",
            "LAMBDA_TASK_ROOT": self.task_root, "_X_AMZN_TRACE_ID": "Root=1-abc;Sampled=1",
            "AWS_LAMBDA_FUNCTION_NAME": "hello"})
        self.assertEqual(os.path.realpath(body["cwd"]), os.path.realpath(self.task_root))
        self.assertEqual(body["path0"], self.task_root)
        # The trace id follows each invocation.
        self.assertEqual(self.ok({}, trace_id="Root=1-def")["env"]["_X_AMZN_TRACE_ID"], "Root=1-def")

    def test_context_fields(self):
        self.write("app.py", """
            import time
            def handler(event, context):
                t1 = context.get_remaining_time_in_millis()
                time.sleep(0.05)
                t2 = context.get_remaining_time_in_millis()
                ident = context.identity
                cc = context.client_context
                return {
                    "request_id": context.aws_request_id,
                    "function_name": context.function_name,
                    "function_version": context.function_version,
                    "arn": context.invoked_function_arn,
                    "memory": context.memory_limit_in_mb,
                    "group": context.log_group_name,
                    "stream": context.log_stream_name,
                    "identity": ident and [ident.cognito_identity_id, ident.cognito_identity_pool_id],
                    "client": cc and [cc.client.installation_id, cc.custom, cc.env],
                    "t1": t1, "t2": t2,
                }
        """)
        self.start("app.handler")
        request_id = self.api.push({}, timeout_ms=10000)
        result = self.api.wait_result(request_id)
        self.assertIsNotNone(result, self.logs())
        body = json.loads(result["body"])
        self.assertEqual(body["request_id"], request_id)
        self.assertEqual(body["function_name"], "hello")
        self.assertEqual(body["function_version"], "$LATEST")
        self.assertEqual(body["arn"], "arn:aws:lambda:local:000000000000:function:hello")
        self.assertEqual(body["memory"], 256)
        self.assertEqual(body["group"], "/aws/lambda/hello")
        self.assertTrue(body["stream"])
        self.assertIsNone(body["identity"])
        self.assertIsNone(body["client"])
        self.assertTrue(0 < body["t2"] < body["t1"] <= 10000, body)
        self.assertGreaterEqual(body["t1"] - body["t2"], 40)

        body = self.ok({}, extra_headers={
            "Lambda-Runtime-Cognito-Identity":
                json.dumps({"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}),
            "Lambda-Runtime-Client-Context":
                json.dumps({"client": {"installation_id": "inst"}, "custom": {"k": 1},
                            "env": {"platform": "x"}}),
        })
        self.assertEqual(body["identity"], ["id-1", "pool-1"])
        self.assertEqual(body["client"], ["inst", {"k": 1}, {"platform": "x"}])

    def test_two_invocations_reuse_process_and_connection(self):
        self.write("app.py", """
            import os
            COUNT = 0
            def handler(event, context):
                global COUNT
                COUNT += 1
                return {"count": COUNT, "pid": os.getpid()}
        """)
        self.start("app.handler")
        first, second = self.ok({}), self.ok({})
        self.assertEqual([first["count"], second["count"]], [1, 2])
        self.assertEqual(first["pid"], second["pid"])
        self.assertEqual(first["pid"], self.proc.pid)
        self.api.wait(lambda: len(self.api.next_requests()) >= 3)
        clients = {r["client"] for r in self.api.requests}
        self.assertEqual(len(clients), 1, "one persistent connection expected: %s" % clients)

    def test_logs_are_flushed_before_the_reply(self):
        self.write("app.py", """
            import sys
            print("hello from the handler")
            def handler(event, context):
                print("during", context.aws_request_id)
                sys.stderr.write("to stderr\\n")
                return 1
        """)
        self.start("app.handler")
        request_id = self.api.push({})
        self.assertIsNotNone(self.api.wait_result(request_id))
        out = read_file(self.out)
        self.assertIn("hello from the handler", out)
        self.assertIn("during " + request_id, out)
        self.assertIn("to stderr", read_file(self.err))

    def test_import_error(self):
        self.start("nothere.handler")
        body = self.init_failed()
        self.assertEqual(body["errorType"], "Runtime.ImportModuleError")
        self.assertIn("nothere", body["errorMessage"])

    def test_import_error_of_a_dependency(self):
        self.write("app.py", """
            import no_such_dependency
            def handler(event, context):
                return 1
        """)
        self.start("app.handler")
        body = self.init_failed()
        self.assertEqual(body["errorType"], "Runtime.ImportModuleError")
        self.assertIn("no_such_dependency", body["errorMessage"])

    def test_syntax_error(self):
        self.write("app.py", """
            def handler(event, context)
                return 1
        """)
        self.start("app.handler")
        body = self.init_failed()
        self.assertEqual(body["errorType"], "Runtime.UserCodeSyntaxError")
        self.assertIn("app.py", "".join(body["stackTrace"]))

    def test_exception_at_import_time(self):
        self.write("app.py", """
            raise RuntimeError("no config")
        """)
        self.start("app.handler")
        body = self.init_failed()
        self.assertEqual(body["errorType"], "RuntimeError")
        self.assertEqual(body["errorMessage"], "no config")

    def test_missing_handler(self):
        self.write("app.py", """
            def other(event, context):
                return 1
        """)
        self.start("app.handler")
        body = self.init_failed()
        self.assertEqual(body["errorType"], "Runtime.HandlerNotFound")
        self.assertIn("handler", body["errorMessage"])

    def test_malformed_handler(self):
        self.start("app")
        self.assertEqual(self.init_failed()["errorType"], "Runtime.MalformedHandlerName")

    def test_marshal_error(self):
        self.write("app.py", """
            import decimal
            def handler(event, context):
                if event == "decimal":
                    return {"price": decimal.Decimal("1.5")}
                return {"x": object()}
        """)
        self.start("app.handler")
        body, headers = self.failed({})
        self.assertEqual(body["errorType"], "Runtime.MarshalError")
        self.assertIn("not JSON serializable", body["errorMessage"])
        self.assertEqual(headers["lambda-runtime-function-error-type"], "Runtime.MarshalError")
        self.assertEqual(self.ok("decimal"), {"price": 1.5})

    def test_unmarshal_error(self):
        self.write("app.py", """
            def handler(event, context):
                return event
        """)
        self.start("app.handler")
        body, _ = self.failed(raw=b"{not json")
        self.assertEqual(body["errorType"], "Runtime.UnmarshalError")
        self.assertEqual(self.ok([1]), [1])

    def test_nested_module_paths(self):
        self.write("pkg/__init__.py", "")
        self.write("pkg/sub/mod.py", """
            def handler(event, context):
                return "pkg.sub.mod"
        """)
        self.write("src/app.py", """
            def handler(event, context):
                return "src/app"
        """)
        self.write("my-code/app2.py", """
            def handler(event, context):
                return "my-code/app2"
        """)
        for spec, expected in [("pkg.sub.mod.handler", "pkg.sub.mod"),
                               ("src/app.handler", "src/app"),
                               ("my-code/app2.handler", "my-code/app2")]:
            with self.subTest(spec=spec):
                self.start(spec)
                self.assertEqual(self.ok({}), expected)
                self.proc.kill()
                self.proc.wait(5)

    def test_handler_from_env_when_no_argument(self):
        self.write("app.py", """
            def handler(event, context):
                return "from env"
        """)
        self.start("app.handler", pass_handler_arg=False)
        self.assertEqual(self.ok({}), "from env")

    def test_sys_exit_in_handler_reports_then_exits(self):
        self.write("app.py", """
            import sys
            def handler(event, context):
                sys.exit(3)
        """)
        self.start("app.handler")
        body, _ = self.failed({})
        self.assertEqual(body["errorType"], "SystemExit")
        self.assert_exits(3)


class PythonDeferredTest(DeferredTests, BootstrapTestCase):
    command = [sys.executable, "-u", PY_BOOTSTRAP]
    app_file = "app.py"
    app_handler = "app.handler"
    app_code = """
        import os, sys
        KEYS = %r
        def handler(event, context):
            return {"event": event, "env": {k: os.environ.get(k) for k in KEYS},
                    "cwd": os.getcwd(), "path0": sys.path[0],
                    "function_name": context.function_name}
    """ % DeferredTests.ENV_KEYS

    def test_task_root_is_first_on_sys_path(self):
        self.start_generic()
        self.assert_waiting()
        self.write("app.py", self.app_code)
        self.api.specialize("app.handler", self.function_env("app.handler"))
        self.assertEqual(self.ok({})["path0"], self.task_root)


# ============================================================================================
# Node.js


@unittest.skipIf(NODE is None, "node is not on PATH: Node.js bootstrap tests skipped")
class NodeBootstrapTest(BootstrapTestCase):
    command = [NODE or "node", NODE_BOOTSTRAP]

    def test_returns_value_commonjs_async(self):
        self.write("index.js", """
            exports.handler = async (event, context) => ({ echo: event, unicode: 'h\\u00e9llo' });
        """)
        self.start("index.handler")
        self.assertEqual(self.ok({"a": [1, None]}), {"echo": {"a": [1, None]}, "unicode": "h\u00e9llo"})

    def test_exception_reports_error_and_keeps_serving(self):
        self.write("index.js", """
            function helper(x) { throw new TypeError('bad value: ' + x); }
            exports.handler = async (event) => {
              if (event.fail) helper(event.fail);
              return 'fine';
            };
        """)
        self.start("index.handler")
        body, headers = self.failed({"fail": 42})
        self.assertEqual(body["errorType"], "TypeError")
        self.assertEqual(body["errorMessage"], "bad value: 42")
        self.assertEqual(body["trace"], body["stackTrace"])
        self.assertEqual(body["trace"][0], "TypeError: bad value: 42")
        self.assertIn("index.js", "\n".join(body["trace"]))
        self.assertEqual(headers["lambda-runtime-function-error-type"], "Unhandled")
        self.assertEqual(self.ok({}), "fine")

    def test_thrown_non_error_value(self):
        self.write("index.js", """
            exports.handler = async () => { throw 'plain string'; };
        """)
        self.start("index.handler")
        body, _ = self.failed({})
        self.assertEqual(body["errorType"], "string")
        self.assertEqual(body["errorMessage"], "plain string")

    def test_env_vars(self):
        self.write("index.js", """
            exports.handler = async () => {
              const keys = ['MY_VAR', 'AWS_REGION', '_HANDLER', 'LAMBDA_TASK_ROOT', '_X_AMZN_TRACE_ID',
                            'AWS_LAMBDA_FUNCTION_NAME'];
              return { env: Object.fromEntries(keys.map((k) => [k, process.env[k] ?? null])), cwd: process.cwd() };
            };
        """)
        self.start("index.handler", {"MY_VAR": "xyz"})
        body = self.ok({}, trace_id="Root=1-abc;Sampled=1")
        self.assertEqual(body["env"], {
            "MY_VAR": "xyz", "AWS_REGION": "local", "_HANDLER": "index.handler",
            "LAMBDA_TASK_ROOT": self.task_root, "_X_AMZN_TRACE_ID": "Root=1-abc;Sampled=1",
            "AWS_LAMBDA_FUNCTION_NAME": "hello"})
        self.assertEqual(os.path.realpath(body["cwd"]), os.path.realpath(self.task_root))
        self.assertEqual(self.ok({}, trace_id="Root=1-def")["env"]["_X_AMZN_TRACE_ID"], "Root=1-def")

    def test_context_fields(self):
        self.write("index.js", """
            exports.handler = async (event, context) => {
              const t1 = context.getRemainingTimeInMillis();
              await new Promise((r) => setTimeout(r, 60));
              const t2 = context.getRemainingTimeInMillis();
              return {
                requestId: context.awsRequestId,
                functionName: context.functionName,
                functionVersion: context.functionVersion,
                arn: context.invokedFunctionArn,
                memory: context.memoryLimitInMB,
                group: context.logGroupName,
                stream: context.logStreamName,
                waits: context.callbackWaitsForEmptyEventLoop,
                identity: context.identity ?? null,
                clientContext: context.clientContext ?? null,
                t1, t2,
              };
            };
        """)
        self.start("index.handler")
        request_id = self.api.push({}, timeout_ms=10000)
        result = self.api.wait_result(request_id)
        self.assertIsNotNone(result, self.logs())
        body = json.loads(result["body"])
        self.assertEqual(body["requestId"], request_id)
        self.assertEqual(body["functionName"], "hello")
        self.assertEqual(body["functionVersion"], "$LATEST")
        self.assertEqual(body["arn"], "arn:aws:lambda:local:000000000000:function:hello")
        self.assertEqual(body["memory"], "256")
        self.assertEqual(body["group"], "/aws/lambda/hello")
        self.assertTrue(body["stream"])
        self.assertIs(body["waits"], True)
        self.assertIsNone(body["identity"])
        self.assertIsNone(body["clientContext"])
        self.assertTrue(0 < body["t2"] < body["t1"] <= 10000, body)
        self.assertGreaterEqual(body["t1"] - body["t2"], 50)

        body = self.ok({}, extra_headers={
            "Lambda-Runtime-Cognito-Identity": json.dumps({"cognitoIdentityId": "id-1"}),
            "Lambda-Runtime-Client-Context": json.dumps({"custom": {"k": 1}}),
        })
        self.assertEqual(body["identity"], {"cognitoIdentityId": "id-1"})
        self.assertEqual(body["clientContext"], {"custom": {"k": 1}})

    def test_two_invocations_reuse_process_and_connection(self):
        self.write("index.js", """
            let count = 0;
            exports.handler = async () => ({ count: ++count, pid: process.pid });
        """)
        self.start("index.handler")
        first, second = self.ok({}), self.ok({})
        self.assertEqual([first["count"], second["count"]], [1, 2])
        self.assertEqual(first["pid"], second["pid"])
        self.api.wait(lambda: len(self.api.next_requests()) >= 3)
        clients = {r["client"] for r in self.api.requests}
        self.assertEqual(len(clients), 1, "one keep-alive connection expected: %s" % clients)

    def test_import_error(self):
        self.start("nothere.handler")
        body = self.init_failed()
        self.assertEqual(body["errorType"], "Runtime.ImportModuleError")
        self.assertIn("nothere", body["errorMessage"])

    def test_import_error_of_a_dependency(self):
        self.write("index.js", """
            const dep = require('no-such-dependency');
            exports.handler = async () => 1;
        """)
        self.write("esm.mjs", """
            import dep from 'no-such-dependency';
            export const handler = async () => 1;
        """)
        for spec in ("index.handler", "esm.handler"):
            with self.subTest(spec=spec):
                self.api.init_errors.clear()
                self.start(spec)
                body = self.init_failed()
                self.assertEqual(body["errorType"], "Runtime.ImportModuleError")
                self.assertIn("no-such-dependency", body["errorMessage"])

    def test_syntax_error(self):
        self.write("index.js", """
            exports.handler = async (event => 1;
        """)
        self.start("index.handler")
        self.assertEqual(self.init_failed()["errorType"], "Runtime.UserCodeSyntaxError")

    def test_exception_at_load_time(self):
        self.write("index.js", """
            throw new RangeError('no config');
        """)
        self.start("index.handler")
        body = self.init_failed()
        self.assertEqual(body["errorType"], "RangeError")
        self.assertEqual(body["errorMessage"], "no config")

    def test_missing_handler(self):
        self.write("index.js", """
            exports.other = async () => 1;
        """)
        self.start("index.handler")
        body = self.init_failed()
        self.assertEqual(body["errorType"], "Runtime.HandlerNotFound")
        self.assertIn("index.handler", body["errorMessage"])

    def test_malformed_handler(self):
        self.start("index")
        self.assertEqual(self.init_failed()["errorType"], "Runtime.MalformedHandlerName")

    def test_commonjs_module_exports_and_cjs_extension(self):
        self.write("a.cjs", """
            module.exports = { handler: async () => 'cjs' };
        """)
        self.write("b.js", """
            const impl = { run: (event, context, cb) => cb(null, 'nested') };
            module.exports = { impl };
        """)
        for spec, expected in [("a.handler", "cjs"), ("b.impl.run", "nested")]:
            with self.subTest(spec=spec):
                self.start(spec)
                self.assertEqual(self.ok({}), expected)
                self.proc.kill()
                self.proc.wait(5)

    def test_esm_mjs(self):
        self.write("index.mjs", """
            import { hostname } from 'node:os';
            const started = await Promise.resolve('tla');
            export const handler = async (event) => ({ kind: 'mjs', started, event });
        """)
        self.start("index.handler")
        self.assertEqual(self.ok(7), {"kind": "mjs", "started": "tla", "event": 7})

    def test_esm_js_with_type_module(self):
        self.write("src/package.json", '{"type": "module"}')
        self.write("src/app.js", """
            export async function handler(event, context) {
              return { kind: typeof require === 'undefined' ? 'esm' : 'cjs', id: context.awsRequestId };
            }
        """)
        self.start("src/app.handler")
        request_id = self.api.push({})
        body = json.loads(self.api.wait_result(request_id)["body"])
        self.assertEqual(body, {"kind": "esm", "id": request_id})

    def test_js_preferred_over_mjs(self):
        self.write("index.js", "exports.handler = async () => 'js';\n")
        self.write("index.mjs", "export const handler = async () => 'mjs';\n")
        self.start("index.handler")
        self.assertEqual(self.ok({}), "js")

    def test_callback_style(self):
        self.write("index.js", """
            exports.handler = (event, context, callback) => {
              setTimeout(() => {
                if (event.fail) callback(new Error('callback failure'));
                else callback(null, { via: 'callback', n: event.n });
              }, 20);
            };
        """)
        self.start("index.handler")
        self.assertEqual(self.ok({"n": 1}), {"via": "callback", "n": 1})
        body, _ = self.failed({"fail": True})
        self.assertEqual(body["errorType"], "Error")
        self.assertEqual(body["errorMessage"], "callback failure")
        self.assertEqual(self.ok({"n": 2}), {"via": "callback", "n": 2})

    def test_context_succeed_fail_done(self):
        self.write("index.js", """
            exports.handler = (event, context) => {
              setTimeout(() => {
                if (event === 'succeed') context.succeed('ok!');
                else if (event === 'fail') context.fail(new Error('failed!'));
                else context.done(null, 'done!');
              }, 10);
            };
        """)
        self.start("index.handler")
        self.assertEqual(self.ok("succeed"), "ok!")
        body, _ = self.failed("fail")
        self.assertEqual(body["errorMessage"], "failed!")
        self.assertEqual(self.ok("done"), "done!")

    def test_sync_and_undefined_results(self):
        self.write("index.js", """
            exports.sync = (event) => ({ sync: event });
            exports.undef = async () => undefined;
            exports.nothing = (event, context) => { console.log('side effect only'); };
        """)
        for spec, expected in [("index.sync", {"sync": 5}), ("index.undef", None), ("index.nothing", None)]:
            with self.subTest(spec=spec):
                self.start(spec)
                self.assertEqual(self.ok(5), expected)
                self.assertEqual(self.ok(5), expected)
                self.proc.kill()
                self.proc.wait(5)

    def test_marshal_error(self):
        self.write("index.js", """
            exports.handler = async () => { const a = {}; a.self = a; return a; };
        """)
        self.start("index.handler")
        body, _ = self.failed({})
        self.assertEqual(body["errorType"], "Runtime.MarshalError")

    def test_unmarshal_error(self):
        self.write("index.js", "exports.handler = async (e) => e;\n")
        self.start("index.handler")
        body, _ = self.failed(raw=b"{not json")
        self.assertEqual(body["errorType"], "Runtime.UnmarshalError")
        self.assertEqual(self.ok([1]), [1])

    def test_uncaught_exception_fails_invocation_and_exits(self):
        self.write("index.js", """
            exports.handler = async () => {
              setTimeout(() => { throw new Error('async crash'); }, 10);
              return new Promise(() => {});
            };
        """)
        self.start("index.handler")
        body, headers = self.failed({})
        self.assertEqual(body["errorType"], "Error")
        self.assertEqual(body["errorMessage"], "async crash")
        self.assertEqual(headers["lambda-runtime-function-error-type"], "Unhandled")
        self.assert_exits(1)

    def test_unhandled_rejection_fails_invocation_and_exits(self):
        self.write("index.js", """
            exports.handler = (event, context, callback) => {
              Promise.reject(new Error('nobody caught me'));
            };
        """)
        self.start("index.handler")
        body, headers = self.failed({})
        self.assertEqual(body["errorType"], "Runtime.UnhandledPromiseRejection")
        self.assertEqual(headers["lambda-runtime-function-error-type"], body["errorType"])
        self.assertIn("nobody caught me", body["errorMessage"])
        self.assert_exits(1)

    def test_crash_during_async_init_is_an_init_error(self):
        self.write("index.mjs", """
            await new Promise((resolve) => setTimeout(resolve, 10));
            setTimeout(() => { throw new Error('late init crash'); }, 0);
            await new Promise((resolve) => setTimeout(resolve, 1000));
            export const handler = async () => 1;
        """)
        self.start("index.handler")
        body = self.init_failed()
        self.assertEqual(body["errorMessage"], "late init crash")

    def test_handler_from_env_when_no_argument(self):
        self.write("index.js", "exports.handler = async () => 'from env';\n")
        self.start("index.handler", pass_handler_arg=False)
        self.assertEqual(self.ok({}), "from env")

    def test_logs_are_written_before_the_reply(self):
        self.write("index.js", """
            console.log('hello from init');
            exports.handler = async (event, context) => {
              console.log('during', context.awsRequestId);
              console.error('to stderr');
              return 1;
            };
        """)
        self.start("index.handler")
        request_id = self.api.push({})
        self.assertIsNotNone(self.api.wait_result(request_id))
        out = read_file(self.out)
        self.assertIn("hello from init", out)
        self.assertIn("during " + request_id, out)
        self.assertIn("to stderr", read_file(self.err))


@unittest.skipIf(NODE is None, "node is not on PATH: Node.js bootstrap tests skipped")
class NodeDeferredTest(DeferredTests, BootstrapTestCase):
    command = [NODE or "node", NODE_BOOTSTRAP]
    app_file = "index.js"
    app_handler = "index.handler"
    app_code = """
        const KEYS = %s;
        exports.handler = async (event, context) => ({
          event,
          env: Object.fromEntries(KEYS.map((k) => [k, process.env[k] ?? null])),
          cwd: process.cwd(),
          function_name: context.functionName,
        });
    """ % json.dumps(DeferredTests.ENV_KEYS)


def load_tests(loader, tests, pattern):
    if NODE is None:
        print("NOTE: node is not on PATH; the Node.js bootstrap tests are skipped", file=sys.stderr)
    return tests


if __name__ == "__main__":
    unittest.main()
