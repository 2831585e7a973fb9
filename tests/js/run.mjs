/**
 * Runs one scenario of tests/js/scenarios.mjs under Node.js 20 against a real stack:
 *
 *   node --experimental-websocket tests/js/run.mjs <scenario> '<config JSON>'
 *
 * Progress and the result are JSON lines on stdout (`{"event": ...}`); a failure prints
 * `{"event":"error","message","stack"}` and exits 1.
 */
import * as natter from "../../gateway/static/natter.js";
import * as scenarios from "./scenarios.mjs";

const [name, rawConfig] = process.argv.slice(2);
const log = (entry) => process.stdout.write(`${JSON.stringify(entry)}\n`);

try {
  if (typeof scenarios[name] !== "function") throw new Error(`no scenario ${name}`);
  const result = await scenarios[name](natter, JSON.parse(rawConfig), log);
  log({ event: "result", result });
  process.exit(0);
} catch (err) {
  log({ event: "error", message: String(err && err.message), stack: String(err && err.stack) });
  process.exit(1);
}
