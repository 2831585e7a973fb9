/**
 * Pure logic of the JavaScript SDK (node --test): backoff, token timing, JWT reading, URLs, the
 * request table's id routing. The Sequencer is checked against the Python SDK's on the same
 * traces by tests/unit/test_js_sdk_units.py (tests/js/sequencer_replay.mjs).
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, Sequencer, httpBaseOf, jwtClaims, refreshAt, tokensFrom } from "../../gateway/static/natter.js";

test("backoff is full jitter under a doubling ceiling, capped, and resets", () => {
  const backoff = new Backoff(200, 1000, () => 0.999);
  const delays = [1, 2, 3, 4, 5].map(() => backoff.next());
  assert.deepEqual(delays.map((d) => Math.round(d)), [200, 400, 799, 999, 999]);
  backoff.reset();
  assert.equal(backoff.ceiling(), 200);
  const zero = new Backoff(200, 1000, () => 0);
  assert.equal(zero.next(), 0);
  assert.throws(() => new Backoff(0, 10), RangeError);
});

test("a token is refreshed a minute before expiry, never before 80 % of its life", () => {
  assert.equal(refreshAt({ issuedAt: 0, expiresAt: 900000 }), 840000);
  assert.equal(refreshAt({ issuedAt: 0, expiresAt: 10000 }), 8000);
});

function jwt(claims) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  return `${b64({ alg: "RS256" })}.${b64(claims)}.sig`;
}

test("JWT claims are read (not verified); junk gives {}", () => {
  assert.deepEqual(jwtClaims(jwt({ sub: "u1", iat: 10, exp: 20, name: "é" })), { sub: "u1", iat: 10, exp: 20, name: "é" });
  assert.deepEqual(jwtClaims("not a token"), {});
  assert.deepEqual(jwtClaims(""), {});
});

test("tokens from a login answer keep the refresh token across a refresh without one", () => {
  const now = Math.floor(Date.now() / 1000);
  const first = tokensFrom({ access_token: jwt({ sub: "u1", iat: now, exp: now + 900 }), refresh_token: "r1", expires_in: 900, user_id: "u1", username: "alice" });
  assert.equal(first.refreshToken, "r1");
  assert.ok(Math.abs(first.expiresAt - (Date.now() + 900000)) < 2000);
  const bare = tokensFrom({ access_token: jwt({ sub: "u1", iat: now, exp: now + 60 }) }, first);
  assert.equal(bare.refreshToken, "r1");
  assert.equal(bare.userId, "u1");
  assert.equal(bare.expiresAt, (now + 60) * 1000);
});

test("the HTTP API of a WebSocket URL", () => {
  assert.equal(httpBaseOf("ws://127.0.0.1:8000/ws"), "http://127.0.0.1:8000");
  assert.equal(httpBaseOf("wss://chat.example.com/ws?x=1"), "https://chat.example.com");
  assert.equal(httpBaseOf("wss://chat.example.com/natter/ws"), "https://chat.example.com/natter");
});

test("the sequencer hands out each seq once and in order whatever arrives", () => {
  const sequencer = new Sequencer();
  sequencer.track("r");
  sequencer.joined("r", { last_seq: 0, messages: [] }, null);
  const out = [];
  const msg = (seq) => ({ type: "message", room: "r", data: { seq } });
  for (const seq of [1, 3, 2, 2, 5, 4, 1]) {
    const outcome = sequencer.push(msg(seq));
    out.push(...outcome.deliver.map((f) => f.data.seq));
    if (outcome.fill !== null) {
      const answer = sequencer.joined("r", { last_seq: 5, messages: [2, 3, 4, 5].map((s) => ({ seq: s })), recovered: true }, outcome.fill);
      out.push(...answer.deliver.map((f) => f.data.seq));
    }
  }
  assert.deepEqual(out, [1, 2, 3, 4, 5]);
});
