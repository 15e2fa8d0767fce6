// The baseline's in-container entry point for Node.js function images: loads the function's
// handler (`module.function`, the image's CMD argument) from /var/task and answers each
// `POST /` with the handler's result as JSON on 127.0.0.1:$PORT, with keep-alive.
import http from "node:http";
import { createRequire } from "node:module";

const [moduleName, functionName] = process.argv[2].split(".");
const require = createRequire("/var/task/");
const handler = require(`/var/task/${moduleName}`)[functionName];

http
  .createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      let status = 200;
      let out;
      try {
        const text = Buffer.concat(chunks).toString() || "{}";
        out = await handler(JSON.parse(text), {});
      } catch (e) {
        status = 502;
        out = { errorMessage: String(e && e.message), errorType: (e && e.name) || "Error" };
      }
      const body = JSON.stringify(out);
      res.writeHead(status, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
      });
      res.end(body);
    });
  })
  .listen(Number(process.env.PORT), "127.0.0.1");
