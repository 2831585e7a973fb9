/**
 * Replays sequencer traces through the JavaScript SDK's Sequencer (gateway/static/natter.js) and
 * prints what it handed out, for tests/unit/test_js_sdk_units.py to compare with the Python
 * SDK's Sequencer on the same traces. Input (stdin): a JSON list of traces, each a list of
 * operations `["push", frame] | ["joined", room, answer, since, replay] | ["track", room] |
 * ["begin_fill", room] | ["fill_failed", room] | ["forget", room]`. Output (stdout): per trace,
 * per operation `{deliver, fill}` (or the return value of begin_fill).
 */
import { Sequencer } from "../../gateway/static/natter.js";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const traces = JSON.parse(input);
const results = traces.map((trace) => {
  const sequencer = new Sequencer(trace.max_held);
  return trace.ops.map((op) => {
    switch (op[0]) {
      case "push":
        return sequencer.push(op[1]);
      case "joined":
        return sequencer.joined(op[1], op[2], op[3], op[4]);
      case "track":
        sequencer.track(op[1]);
        return null;
      case "begin_fill":
        return sequencer.beginFill(op[1]);
      case "fill_failed":
        return sequencer.fillFailed(op[1]);
      case "forget":
        sequencer.forget(op[1]);
        return null;
      default:
        throw new Error(`unknown op ${op[0]}`);
    }
  });
});
process.stdout.write(JSON.stringify(results));
