"""The JavaScript SDK's pure logic under Node.js (issue 13 item 5): its own ``node --test`` unit
tests (tests/js/units.test.mjs), and its Sequencer checked against the Python SDK's on the same
random traces (duplicates, reordering, gaps, fills, failed fills, unrecoverable gaps, bounded
holding), so that both SDKs hand out exactly the same frames in the same order."""

from __future__ import annotations

import json
import random
import subprocess
from dataclasses import asdict
from typing import Any

from natter.sdk.dedup import Sequencer
from tests.js_driver import JS_DIR
from tests.tools import missing

Op = list[Any]


def test_node_unit_tests_pass(node: str) -> None:
    run = subprocess.run(
        [node, "--test", str(JS_DIR / "units.test.mjs")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 6" in run.stdout, run.stdout[-2000:]


def message(room: str, seq: int, kind: str = "message") -> dict[str, Any]:
    data: dict[str, Any] = {"seq": seq, "message": f"m{seq}"}
    if kind != "message":
        data["type"] = kind
    return data


def random_trace(rng: random.Random) -> dict[str, Any]:
    """Operations a client's sequencer sees, with the answers storage could give."""
    rooms = ["a", "b"]
    ops: list[Op] = [["track", room] for room in rooms]
    top = {room: 0 for room in rooms}  # highest seq that exists in each room
    for _ in range(rng.randint(5, 60)):
        room = rng.choice(rooms)
        roll = rng.random()
        if roll < 0.55:
            top[room] += rng.choice([0, 1, 1, 1, 2, 3])
            seq = max(1, top[room] - rng.choice([0, 0, 0, 1, 2, 5]))
            kind = rng.choice(["message", "message", "reaction", "message_edited"])
            ops.append(["push", {"type": kind, "room": room, "data": message(room, seq)}])
        elif roll < 0.8:
            top[room] += rng.choice([0, 1, 4])
            since = rng.choice([None, max(0, top[room] - rng.randint(0, 8))])
            recovered = rng.random() < 0.8
            first = (since or 0) + 1 if recovered else max(1, top[room] - rng.randint(0, 3))
            seqs = list(range(first, top[room] + 1))
            if rng.random() < 0.2 and seqs:
                seqs = seqs[: rng.randint(0, len(seqs))]
            kinds = [rng.choice(["message", "reaction"]) for _ in seqs]
            answer = {
                "type": "joined",
                "room": room,
                "last_seq": top[room],
                "messages": [message(room, s, k) for s, k in zip(seqs, kinds, strict=True)],
                "recovered": recovered,
            }
            ops.append(["joined", room, answer, since, rng.random() < 0.8])
        elif roll < 0.9:
            ops.append(["begin_fill", room])
        elif roll < 0.97:
            ops.append(["fill_failed", room])
        else:
            ops.append(["forget", room])
            ops.append(["track", room])
    return {"max_held": rng.choice([3, 10, 10_000]), "ops": ops}


def python_outputs(trace: dict[str, Any]) -> list[Any]:
    sequencer = Sequencer(max_held=trace["max_held"])
    out: list[Any] = []
    for op in trace["ops"]:
        if op[0] == "push":
            out.append(asdict(sequencer.push(op[1])))
        elif op[0] == "joined":
            out.append(asdict(sequencer.joined(op[1], op[2], op[3], replay=op[4])))
        elif op[0] == "track":
            sequencer.track(op[1])
            out.append(None)
        elif op[0] == "begin_fill":
            out.append(sequencer.begin_fill(op[1]))
        elif op[0] == "fill_failed":
            out.append(asdict(sequencer.fill_failed(op[1])))
        else:
            sequencer.forget(op[1])
            out.append(None)
    return out


def test_the_js_sequencer_hands_out_what_the_python_one_does(node: str) -> None:
    rng = random.Random(20261207)
    traces = [random_trace(rng) for _ in range(400)]
    expected = [python_outputs(trace) for trace in traces]
    run = subprocess.run(
        [node, str(JS_DIR / "sequencer_replay.mjs")],
        input=json.dumps(traces),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    got = json.loads(run.stdout)
    delivered = sum(len(o["deliver"]) for outs in expected for o in outs if isinstance(o, dict))
    assert delivered > 2000, delivered  # the traces exercise the sequencer, not just track/forget
    for index, (mine, theirs) in enumerate(zip(expected, got, strict=True)):
        for step, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            assert a == b, f"trace {index} op {step} {traces[index]['ops'][step][0]}: python {a} js {b}"


def test_the_jsdoc_types_hold(node: str) -> None:
    """TypeScript checks natter.js and app.js from their JSDoc (tests/js/tsconfig.json): every
    option documented is an option taken, every call matches. The checker comes from
    ``npm ci --prefix tests/js`` (.ci/run does it; the versions are pinned in package-lock.json)."""
    tsc = JS_DIR / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        missing(f"{tsc} is not installed: npm ci --prefix tests/js")
    run = subprocess.run(
        [node, str(JS_DIR / "node_modules/typescript/bin/tsc"), "-p", str(JS_DIR / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
