/**
 * Scenarios of the JavaScript SDK (gateway/static/natter.js) against a real natter stack, run the
 * same way under Node.js 20 (tests/js/run.mjs) and in headless Chromium (a page imports
 * /sdk/natter.js and this file). Each scenario throws on the first broken expectation; `log`
 * reports progress (`log({event: "..."})`) to the Python test driving it.
 *
 * @module scenarios
 */

/** @param {unknown} condition @param {string} message */
function check(condition, message) {
  if (!condition) throw new Error(`expectation failed: ${message}`);
}

/** A short unique name with `prefix` (usernames 3..32 of [A-Za-z0-9_], rooms [a-z0-9_-]). */
function unique(prefix) {
  return `${prefix}_${Math.random().toString(36).slice(2, 10)}`;
}

const PASSWORD = "correct horse 1";

/** Resolves when `predicate()` holds, polling every 20 ms; rejects after `ms` with `what`. */
async function until(predicate, what, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Register and log in a new user; a client for `urls` with its own NatterHttp. */
async function newUser(natter, httpBase, urls, prefix, options = {}) {
  const http = new natter.NatterHttp({ baseUrl: httpBase });
  const username = unique(prefix);
  await http.register(username, PASSWORD);
  await http.login(username, PASSWORD);
  const client = new natter.NatterClient({ urls, http, backoffBase: 100, backoffCap: 1000, ...options });
  /** @type {any[]} every pushed frame, in order */
  const frames = [];
  client.on("*", (frame) => frames.push(frame));
  /** @type {string[]} connection states seen */
  const states = [];
  client.on("state", (event) => states.push(event.state));
  return { http, client, username, frames, states };
}

/** The room events of `room` in `frames`, as [type, seq] pairs. */
function eventsOf(frames, room) {
  return frames
    .filter((f) => f.room === room && ["message", "message_edited", "message_deleted", "reaction", "member"].includes(f.type))
    .map((f) => [f.type, f.data.seq]);
}

/** Seqs are contiguous and increasing from the first one. */
function contiguous(seqs) {
  return seqs.every((seq, i) => i === 0 || seq === seqs[i - 1] + 1);
}

/**
 * Everything a chat app does, through the SDK: auth, join, send (idempotent), attachments,
 * edit, react, reply, read, history, presence, typing, notifications, a token refresh on the
 * live socket, bad input as typed errors, leave, and a logout elsewhere stopping the client.
 * @param {any} natter the SDK module @param {{http: string, urls: string[]}} config
 * @param {(entry: object) => void} log
 */
export async function basic(natter, config, log) {
  const room = unique("js").toLowerCase();
  const alice = await newUser(natter, config.http, config.urls, "alice");
  const bob = await newUser(natter, config.http, config.urls, "bob");
  await alice.client.connect();
  await bob.client.connect();
  check(alice.client.username === alice.username, "auth_success names alice");
  check(alice.client.connected && alice.states.includes("online"), "alice online");

  const joined = await alice.client.join(room);
  check(joined.type === "joined" && joined.room === room, "joined answer");
  await bob.client.join(room);
  const presence = await bob.client.presence(room);
  check(presence.online.some((u) => u.username === alice.username), "alice is online in presence");

  // typing reaches the other member (no answer, no queue)
  check(alice.client.typing(room) === true, "typing sent");
  await until(() => bob.frames.some((f) => f.type === "typing" && f.username === alice.username), "typing");

  // send: the ack, the message to both, idempotent on clientMsgId
  const ack = await alice.client.send(room, "hello from node", { clientMsgId: "js-1" });
  check(ack.type === "ack" && ack.seq >= 1, "ack with seq");
  const again = await alice.client.send(room, "hello from node", { clientMsgId: "js-1" });
  check(again.seq === ack.seq, `a repeated clientMsgId answers the original ack (${again.seq} vs ${ack.seq})`);
  await until(() => bob.frames.some((f) => f.type === "message" && f.data.seq === ack.seq), "bob gets the message");

  // attachments (section 11): upload, send with it, the other member downloads it
  const file = await alice.http.upload(room, new Blob(["notes from node\n"], { type: "text/plain" }), "notes.txt");
  check(file.content_type === "text/plain" && file.name === "notes.txt", "upload answer");
  const withFile = await alice.client.send(room, "see attached", { attachments: [file.attachment_id] });
  await until(() => bob.frames.some((f) => f.type === "message" && f.data.seq === withFile.seq), "message with file");
  const delivered = bob.frames.find((f) => f.type === "message" && f.data.seq === withFile.seq);
  check(delivered.data.attachments[0].attachment_id === file.attachment_id, "attachment delivered");
  const blob = await bob.http.download(file.attachment_id);
  check((await blob.text()) === "notes from node\n", "download has the bytes");

  // v2: edit, react, reply, read
  const edited = await alice.client.edit(room, ack.seq, "hello from node (edited)");
  const reacted = await bob.client.react(room, ack.seq, "👍");
  const reply = await bob.client.send(room, "a reply", { replyTo: ack.seq });
  const marker = await bob.client.read(room, reply.seq);
  check(marker.type === "read_marker" && marker.seq === reply.seq && marker.unread === 0, "read marker");
  await until(() => alice.frames.some((f) => f.type === "message" && f.data.seq === reply.seq), "alice gets the reply");
  const seen = eventsOf(alice.frames, room);
  check(JSON.stringify(seen.map((e) => e[1])) === JSON.stringify([...new Set(seen.map((e) => e[1]))]), "no duplicates");
  check(contiguous(seen.map((e) => e[1])), `alice's room events are contiguous: ${JSON.stringify(seen)}`);
  check(seen.some(([type, seq]) => type === "message_edited" && seq === edited.seq), "edit event");
  check(seen.some(([type, seq]) => type === "reaction" && seq === reacted.seq), "reaction event");

  // history over the socket and over HTTP: current state of the edited message
  const page = await bob.client.history(room, { limit: 10 });
  const first = page.messages.find((m) => m.seq === ack.seq);
  check(first && first.message === "hello from node (edited)" && first.reply_count === 1, "history shows the current state");
  const httpPage = await bob.http.history(room, { limit: 10 });
  check(httpPage.messages.some((m) => m.seq === reply.seq), "HTTP history");

  // notifications: a mention of bob arrives as a pushed frame
  await alice.client.send(room, `@${bob.username} look`);
  await until(() => bob.frames.some((f) => f.type === "notification"), "mention notification");
  const summary = await bob.client.notifications({ unreadOnly: true });
  check(summary.unread >= 1, "unread notifications");
  const cleared = await bob.client.markRead({ all: true });
  check(cleared.unread === 0, "mark all read");

  // bad input: typed errors, the socket stays
  let error = null;
  try {
    await alice.client.join("Bad.Room");
  } catch (err) {
    error = err;
  }
  check(error instanceof natter.RequestError && error.code === "invalid_room", `invalid_room, got ${error}`);
  error = null;
  try {
    await alice.client.send(unique("nowhere").toLowerCase(), "x");
  } catch (err) {
    error = err;
  }
  check(error instanceof natter.RequestError && error.code === "not_joined", `not_joined, got ${error}`);
  check((await alice.client.ping()).type === "pong", "the socket still answers");

  // a refresh on the live socket: new tokens, same socket
  const before = alice.http.tokens.accessToken;
  await alice.client.refreshNow();
  check(alice.http.tokens.accessToken !== before, "the access token changed");
  check(alice.client.connections === 1 && alice.client.connected, "the same socket stays");
  check((await alice.client.send(room, "after refresh")).type === "ack", "sends after refresh");

  // leave: its frames stop
  await bob.client.leave(room);
  check(!bob.client.rooms.has(room), "bob left");

  // logout everywhere from another login: the client stops with an AuthError
  const other = new natter.NatterHttp({ baseUrl: config.http });
  await other.login(alice.username, PASSWORD);
  await other.logout({ all: true });
  await until(() => alice.client.state === "stopped", "alice's client stops after logout all");
  let stopped = null;
  try {
    await alice.client.ping();
  } catch (err) {
    stopped = err;
  }
  check(stopped instanceof natter.AuthError && stopped.reason === "session revoked", `AuthError, got ${stopped}`);
  bob.client.close();
  check(bob.client.state === "stopped", "close stops");
  log({ event: "done", room, events: seen.length });
  return { room, events: seen.length };
}

/**
 * A gateway dies mid-stream: alice (sending) and carol (only reading) are on the first URL and
 * fail over to the second; bob stays on the second. Carol sends nothing, so only the re-join
 * with `since` after her reconnect can bring her what she missed. Every message is acked once with a distinct seq, and both see every
 * message exactly once, in order, with no gap. The driver kills the gateway when it reads the
 * `kill` event; the scenario goes on sending meanwhile (sends queue and are resent).
 * @param {any} natter @param {{http: string, urls: string[], count?: number}} config
 * @param {(entry: object) => void} log
 */
export async function failover(natter, config, log) {
  const count = config.count || 60;
  const room = unique("fo").toLowerCase();
  const alice = await newUser(natter, config.http, config.urls, "alice", { requestTimeout: 15000, sendDeadline: 45000 });
  const bob = await newUser(natter, config.http, [config.urls[1]], "bob");
  const carol = await newUser(natter, config.http, config.urls, "carol");
  await alice.client.connect();
  await bob.client.connect();
  await carol.client.connect();
  check(alice.client.url === config.urls[0], `alice starts on the first gateway (${alice.client.url})`);
  check(carol.client.url === config.urls[0], `carol starts on the first gateway (${carol.client.url})`);
  await alice.client.join(room);
  await bob.client.join(room);
  await carol.client.join(room);

  const acks = [];
  const pending = [];
  for (let i = 1; i <= count; i += 1) {
    pending.push(alice.client.send(room, `m${i}`, { clientMsgId: `fo-${i}` }).then((ack) => acks.push(ack)));
    if (i === Math.floor(count / 3)) {
      await until(() => acks.length >= i - 2, "the first third acked");
      log({ event: "kill" });
    }
    await new Promise((resolve) => setTimeout(resolve, 60)); // ~16 frames/s: under the rate limit
  }
  await Promise.all(pending);
  const ackSeqs = acks.map((a) => a.seq).sort((a, b) => a - b);
  check(new Set(ackSeqs).size === count, `${count} distinct acked seqs, got ${new Set(ackSeqs).size}`);
  check(contiguous(ackSeqs), `acked seqs are contiguous: ${ackSeqs}`);
  const last = ackSeqs[ackSeqs.length - 1];
  for (const [name, user] of [["alice", alice], ["bob", bob], ["carol", carol]]) {
    await until(() => user.client.lastSeq(room) === last, `${name} sees seq ${last}`, 20000);
    const texts = user.frames.filter((f) => f.type === "message" && f.room === room).map((f) => f.data.message);
    const seqs = eventsOf(user.frames, room).map((e) => e[1]);
    check(texts.length === count, `${name} got ${texts.length} messages, expected ${count}`);
    check(new Set(texts).size === count, `${name} got duplicates`);
    check(contiguous(seqs), `${name}'s seqs are contiguous`);
    check(!user.frames.some((f) => f.type === "gap"), `${name} saw no gap`);
  }
  for (const [name, user] of [["alice", alice], ["carol", carol]]) {
    check(user.client.connections === 2, `${name} reconnected once (${user.client.connections})`);
    check(user.client.url === config.urls[1], `${name} is on the second gateway`);
    check(user.states.includes("offline"), `${name} saw the outage`);
  }
  for (const user of [alice, bob, carol]) user.client.close();
  const result = { room, sent: count, acked: acks.length, first: ackSeqs[0], last };
  log({ event: "done", ...result });
  return result;
}
