/*
 * natter web client (PROTOCOL.md v2): plain JavaScript, no build step, no external resources.
 * The protocol is the JavaScript SDK's (/sdk/natter.js: tokens and their refresh, the socket,
 * reconnect with backoff, recovery with `since`, resends with the same client_msg_id, each
 * room's events once and in order); this file is the UI on top of it.
 *
 * Safety rule: every string that comes from a user or the server is put into the page with
 * textContent / createTextNode only. This file never uses innerHTML, outerHTML or
 * insertAdjacentHTML.
 *
 * Shape:
 *   session   - the SDK's tokens, kept in sessionStorage (NatterHttp onTokens)
 *   socket    - one NatterClient; its "state" events drive the connection badge
 *   rooms     - joined rooms: messages by seq, presence, typing, pending (unacked) sends;
 *               v2 room events (edits, deletes, reactions, replies, member changes) applied
 *               to each message's state, threads, unread badges, direct messages, moderation
 *   notify    - bell, panel, mark read, broadcast toasts
 */
import { AuthError, HttpError, NatterClient, NatterHttp, RequestError } from "/sdk/natter.js";

// ---- constants ----------------------------------------------------------------------------
const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const USERNAME_RE = /^[A-Za-z0-9_]{3,32}$/;
const MAX_MESSAGE_CHARS = 4000;
const TYPING_SEND_INTERVAL_MS = 2000; // send `typing` at most this often
const TYPING_SHOW_MS = 3000; // show "x is typing…" this long after the last typing frame
const HISTORY_PAGE = 50;
const STORE_KEY = "natter.session";
const ROOMS_KEY = "natter.rooms";
const REACTIONS = ["👍", "❤️", "😂", "🎉", "😮"]; // the fixed set the picker offers

// ---- DOM helpers (text only) --------------------------------------------------------------
/** The element with `id` (the page's own ids; inputs and buttons alike). @type {(id: string) => any} */
const $ = (id) => document.getElementById(id);

/** Create an element with optional class and text (set through textContent). */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

function setText(node, text) {
  node.textContent = text == null ? "" : String(text);
  show(node, Boolean(text));
}

function formatTime(ts) {
  const date = new Date(ts);
  if (Number.isNaN(date.getTime())) return "";
  const sameDay = date.toDateString() === new Date().toDateString();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return sameDay ? time : `${date.toLocaleDateString()} ${time}`;
}

/** The text to show for an SDK error: the server's detail or message. */
function errText(err) {
  if (err instanceof HttpError) return err.status === 0 ? "Cannot reach the server" : err.detail;
  if (err instanceof RequestError) return String(err.frame.message || err.code);
  return String((err && err.message) || err);
}

// ---- app state ----------------------------------------------------------------------------
const state = {
  http: new NatterHttp({ onTokens: saveSession }), // the HTTP API, same origin; holds the tokens
  client: null, // the NatterClient while logged in
  session: null, // the SDK's tokens: {accessToken, refreshToken, expiresAt, userId, username}
  stopped: true, // true while logged out

  compose: null, // {mode: "reply"|"edit", room, seq} while replying or editing
  thread: null, // {room, seq} of the open thread

  rooms: new Map(), // name -> Room
  active: null, // active room name
  lastTypingSent: 0,

  notifications: new Map(), // id -> {data, el}
  unread: 0,
  queued: [], // uploaded files waiting for the next message: {room, info}
};

/** Whether the socket is authenticated and live. */
function online() {
  return Boolean(state.client && state.client.connected);
}

// ---- session (tokens in sessionStorage) ---------------------------------------------------
function saveSession(tokens) {
  state.session = tokens;
  if (tokens) sessionStorage.setItem(STORE_KEY, JSON.stringify(tokens));
  else sessionStorage.removeItem(STORE_KEY);
  if (tokens && tokens.username) $("me-name").textContent = tokens.username;
}

function loadSession() {
  try {
    const raw = sessionStorage.getItem(STORE_KEY);
    if (!raw) return null;
    const s = JSON.parse(raw);
    if (s && typeof s.accessToken === "string" && typeof s.refreshToken === "string" && Number.isFinite(s.expiresAt)) return s;
  } catch (_err) {
    /* corrupt entry: ignore */
  }
  return null;
}

function saveRooms() {
  const names = Array.from(state.rooms.keys());
  sessionStorage.setItem(ROOMS_KEY, JSON.stringify({ rooms: names, active: state.active }));
}

function loadRooms() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(ROOMS_KEY) || "null");
    if (saved && Array.isArray(saved.rooms)) {
      return { rooms: saved.rooms.filter((r) => typeof r === "string" && ROOM_RE.test(r)), active: saved.active };
    }
  } catch (_err) {
    /* ignore */
  }
  return { rooms: [], active: null };
}

/** JSON request to the HTTP API (the SDK's NatterHttp.call). Rejects with an SDK HttpError. */
function api(method, path, body, { auth = false } = {}) {
  return state.http.call(method, path, { json: body, auth });
}

// ---- auth view ----------------------------------------------------------------------------
function authInputs() {
  const username = $("login-username").value.trim();
  const password = $("login-password").value;
  if (!USERNAME_RE.test(username)) {
    setText($("auth-error"), "Username must be 3–32 letters, digits or _.");
    return null;
  }
  if (password.length < 8 || password.length > 128) {
    setText($("auth-error"), "Password must be 8–128 characters.");
    return null;
  }
  return { username, password };
}

function setAuthBusy(busy) {
  $("login-button").disabled = busy;
  $("register-button").disabled = busy;
}

async function doLogin(creds) {
  await state.http.login(creds.username, creds.password);
  $("login-password").value = "";
  startChat();
}

async function onLoginSubmit(event) {
  event.preventDefault();
  setText($("auth-error"), "");
  setText($("auth-info"), "");
  const creds = authInputs();
  if (!creds) return;
  setAuthBusy(true);
  try {
    await doLogin(creds);
  } catch (err) {
    setText($("auth-error"), errText(err));
  } finally {
    setAuthBusy(false);
  }
}

async function onRegister() {
  setText($("auth-error"), "");
  setText($("auth-info"), "");
  const creds = authInputs();
  if (!creds) return;
  setAuthBusy(true);
  try {
    await state.http.register(creds.username, creds.password);
    setText($("auth-info"), "Account created. Logging in…");
    await doLogin(creds);
  } catch (err) {
    setText($("auth-error"), errText(err));
  } finally {
    setAuthBusy(false);
  }
}

function showAuthView(message) {
  show($("chat-view"), false);
  show($("auth-view"), true);
  setText($("auth-info"), message || "");
  $("login-username").focus();
}

// ---- chat lifecycle -----------------------------------------------------------------------
function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function startChat() {
  state.stopped = false;
  $("me-name").textContent = state.session.username || "";
  show($("auth-view"), false);
  show($("chat-view"), true);
  const client = new NatterClient({ urls: [wsUrl()], http: state.http, backoffBase: 500, backoffCap: 15000 });
  state.client = client;
  client.on("state", onConnectionState);
  client.on("*", handleFrame);
  const saved = loadRooms();
  for (const name of saved.rooms) ensureRoom(name);
  if (saved.active && state.rooms.has(saved.active)) setActive(saved.active);
  else if (state.rooms.size) setActive(state.rooms.keys().next().value);
  renderRoomList();
  renderActive();
  loadAvailableRooms();
  client.connect().catch(() => {
    /* a refusal arrives as the "stopped" state; a slow start just keeps trying */
  });
  for (const room of state.rooms.values()) sendJoin(room);
  $("room-input").focus();
}

/** Tear everything down locally and show the login form. */
function endSession(message) {
  state.stopped = true;
  const client = state.client;
  state.client = null;
  if (client) client.close();
  state.http.setTokens(null);
  sessionStorage.removeItem(ROOMS_KEY);
  for (const room of state.rooms.values()) room.clearTyping();
  state.rooms.clear();
  state.active = null;
  state.notifications.clear();
  state.unread = 0;
  state.queued = [];
  $("notifications-list").replaceChildren();
  $("messages").replaceChildren();
  $("available-rooms").replaceChildren();
  closePanel();
  renderBell();
  renderRoomList();
  renderActive();
  setConn("offline", "offline");
  showAuthView(message);
}

async function onLogout() {
  await state.http.logout(); // revokes this session; the local one ends anyway
  endSession("You are logged out.");
}

// ---- socket -------------------------------------------------------------------------------
function setConn(kind, text) {
  const node = $("conn-status");
  node.dataset.state = kind;
  node.textContent = text;
}

/** The SDK's connection states drive the badge; "online" (after every re-sync) reloads badges. */
function onConnectionState(event) {
  if (state.stopped) return;
  if (event.state === "connecting") {
    setConn("connecting", state.client && state.client.connections ? "reconnecting…" : "connecting…");
  } else if (event.state === "offline") {
    setConn("offline", `offline – reconnecting in ${Math.max(1, Math.ceil((event.delay || 0) / 1000))} s`);
    for (const room of state.rooms.values()) {
      room.joined = false;
      room.historyPending = false;
      room.clearTyping();
    }
    renderActive();
  } else if (event.state === "online") {
    setConn("online", "online");
    loadMyRooms(); // unread badges, roles, direct messages (v2 section 9)
    // the server's summary lists unread items only; the panel also shows recent read ones
    state.client.notifications({ unreadOnly: false, limit: 50 }).then(onNotificationSummary, () => {});
  } else if (event.state === "stopped" && event.error) {
    const reason = event.error instanceof AuthError ? event.error.reason : "";
    if (reason === "session revoked") endSession("Your session was revoked. Please log in again.");
    else if (reason === "auth failed") endSession(`Signed out: ${event.error.message}`);
    else endSession("Your session has expired. Please log in again.");
  }
}

// ---- frames -------------------------------------------------------------------------------
/** Every pushed frame the SDK hands out (room events once and in seq order, per room). */
function handleFrame(frame) {
  switch (frame.type) {
    case "joined":
      onJoined(frame);
      break;
    case "gap":
      onGap(frame);
      break;
    case "message":
      onMessage(frame);
      break;
    case "user_joined":
      onPresenceChange(frame, true);
      break;
    case "user_left":
      onPresenceChange(frame, false);
      break;
    case "presence":
      onPresence(frame);
      break;
    case "typing":
      onTyping(frame);
      break;
    case "notifications":
      onNotificationSummary(frame);
      break;
    case "notification":
      onNotification(frame.data);
      break;
    case "broadcast_notification":
      onBroadcast(frame.data);
      break;
    case "error":
      onPushedError(frame);
      break;
    case "removed":
      onRemoved(frame);
      break;
    case "message_edited":
    case "message_deleted":
    case "reaction":
    case "member":
      onRoomEvent(frame);
      break;
    case "read_marker":
      onReadMarker(frame);
      break;
    default:
      break; // unknown frames from a newer server are ignored
  }
}

/** An error without a request: a room that can no longer be re-joined, or a notice. */
function onPushedError(frame) {
  const code = String(frame.code || "error");
  const message = String(frame.message || code);
  if (typeof frame.room === "string" && state.rooms.has(frame.room)) {
    removeRoom(frame.room);
    showError(`Cannot rejoin #${frame.room}: ${message}`);
    return;
  }
  showError(message);
}

let errorTimer = null;
function showError(text) {
  setText($("error-bar"), text);
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => setText($("error-bar"), ""), 6000);
}

// ---- rooms --------------------------------------------------------------------------------
/** One joined room: its messages (by seq), who is online, who is typing, unacked sends. */
class Room {
  constructor(name) {
    this.name = name;
    this.joined = false; // joined on the current socket (its `joined` frame came)
    this.joining = false; // a join() is in flight
    this.everJoined = false;
    this.gapped = false; // the SDK reported a gap it could not fill: paging starts over
    this.lastSeq = 0; // highest seq seen (live messages with seq <= lastSeq are ignored)
    this.lowestSeq = Infinity; // lowest seq loaded (history pages go below it)
    this.hasMore = false;
    this.historyPending = false;
    this.bySeq = new Map(); // seq -> element
    this.pending = new Map(); // client_msg_id -> {text, el, tries, failed}
    this.online = new Map(); // user_id -> username
    this.typing = new Map(); // user_id -> {username, timer}
    this.unread = 0;
    this.data = new Map(); // seq -> the message as it is now (text, edits, reactions, replies)
    this.role = "member"; // owner / moderator / member (GET /api/me/rooms)
    this.peer = null; // the other user of a direct message
    this.readSent = 0; // the highest seq sent in a `read`
    this.list = el("div", "room-messages");
    this.list.dataset.room = name;
  }

  clearTyping() {
    for (const t of this.typing.values()) clearTimeout(t.timer);
    this.typing.clear();
  }
}

function ensureRoom(name) {
  let room = state.rooms.get(name);
  if (!room) {
    room = new Room(name);
    state.rooms.set(name, room);
    saveRooms();
  }
  return room;
}

function removeRoom(name) {
  const room = state.rooms.get(name);
  if (!room) return;
  room.clearTyping();
  state.rooms.delete(name);
  if (state.active === name) state.active = state.rooms.size ? state.rooms.keys().next().value : null;
  saveRooms();
  renderRoomList();
  renderActive();
}

/** Join `room` through the SDK (queued while offline; re-joined with `since` after every
 * reconnect until left). Its events arrive as frames, then its `joined` frame. */
function sendJoin(room) {
  if (!state.client || room.joining || room.joined) return;
  room.joining = true;
  state.client.join(room.name).then(
    () => {
      room.joining = false;
    },
    (err) => {
      room.joining = false;
      const code = err instanceof RequestError ? err.code : "";
      if (!room.everJoined && (code === "forbidden" || code === "invalid_room" || code === "room_not_found" || code === "banned")) {
        removeRoom(room.name);
      }
      if (state.client) showError(`Cannot join ${room.name}: ${errText(err)}`);
    },
  );
}

function joinRoom(name) {
  const room = ensureRoom(name);
  setActive(name);
  if (!room.joined) sendJoin(room);
  renderRoomList();
  renderActive();
}

function leaveRoom(name) {
  if (state.client) state.client.leave(name).catch(() => {});
  removeRoom(name);
  // for good (v2 section 9): it leaves GET /api/me/rooms too; a DM stays (409)
  if (!name.startsWith("dm-")) {
    api("POST", `/api/rooms/${encodeURIComponent(name)}/leave`, undefined, { auth: true }).catch(() => {});
  }
}

function setActive(name) {
  state.active = name;
  const room = state.rooms.get(name);
  if (room) room.unread = 0;
  saveRooms();
  markActiveRead();
}

/** The user lost access to a room (removed by its owner, or banned): drop it from the view. */
function onRemoved(frame) {
  const name = String(frame.room || "");
  if (!state.rooms.has(name)) return;
  removeRoom(name);
  showError(`You were ${frame.reason === "banned" ? "banned" : "removed"} from #${name}`);
}

/** A `joined` answer (first join, or the SDK's re-join after a reconnect): its events were
 * handed out as frames just before it; here the room's online list and paging start. */
function onJoined(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  const wasJoined = room.everJoined;
  room.joined = true;
  room.joining = false;
  room.everJoined = true;
  const lastSeq = Number(frame.last_seq) || 0;
  if (lastSeq > room.lastSeq) room.lastSeq = lastSeq;
  if (!wasJoined || room.gapped) room.hasMore = room.lowestSeq !== Infinity ? room.lowestSeq > 1 : lastSeq > 0;
  room.gapped = false;
  room.online.clear();
  for (const u of Array.isArray(frame.online) ? frame.online : []) {
    if (u && u.user_id) room.online.set(String(u.user_id), String(u.username || u.user_id));
  }
  if (state.session && state.session.userId) room.online.set(state.session.userId, state.session.username || "");
  if (room.name === state.active) {
    renderActive();
    scrollToBottom();
    markActiveRead();
  } else {
    renderRoomList();
  }
}

/** The SDK could not recover what was missed (`recovered: false`): start over from the latest
 * page (which follows as frames), older ones via history. */
function onGap(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  for (const node of room.bySeq.values()) node.remove();
  room.bySeq.clear();
  room.data.clear();
  room.lowestSeq = Infinity;
  room.lastSeq = Math.max(0, Number(frame.after) || 0);
  room.gapped = true;
}

function onPresenceChange(frame, joined) {
  const room = state.rooms.get(frame.room);
  if (!room || !frame.user_id) return;
  const id = String(frame.user_id);
  if (joined) room.online.set(id, String(frame.username || id));
  else {
    room.online.delete(id);
    clearTypingFor(room, id);
  }
  if (room.name === state.active) renderOnline();
}

function onPresence(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  room.online.clear();
  for (const u of Array.isArray(frame.online) ? frame.online : []) {
    if (u && u.user_id) room.online.set(String(u.user_id), String(u.username || u.user_id));
  }
  if (room.name === state.active) renderOnline();
}

// ---- messages -----------------------------------------------------------------------------
function mentionsMe(text) {
  const me = state.session && state.session.username;
  if (!me) return false;
  const re = new RegExp(`(^|[^A-Za-z0-9_])@${me}(?![A-Za-z0-9_])`, "i");
  return re.test(text);
}

/** Build a message row; every user-supplied field goes through textContent. */
function buildMessage(data, pending, room) {
  const row = el("div", "message");
  row.dataset.testid = "message";
  const mine = state.session && data.user_id === state.session.userId;
  if (mine) row.classList.add("own");
  if (pending) row.classList.add("pending");
  if (data.deleted) row.classList.add("deleted");
  if (!mine && !data.deleted && mentionsMe(String(data.message || ""))) row.classList.add("mention");
  if (room && typeof data.reply_to === "number") {
    const original = room.data.get(data.reply_to);
    const quoted = original
      ? `${original.username || "?"}: ${original.deleted ? "message deleted" : String(original.message || "")}`
      : "a message not loaded";
    const quote = el("div", "message-quote", `↪ ${quoted.slice(0, 140)}`);
    quote.dataset.testid = "message-quote";
    row.append(quote);
  }
  const meta = el("div", "message-meta");
  meta.append(el("span", "message-user", data.username || "?"));
  if (data.bot === true) {
    const badge = el("span", "message-bot", "bot");
    badge.dataset.testid = "message-bot";
    badge.title = "Posted by a service";
    meta.append(badge);
  }
  const time = el("time", "message-time", data.timestamp ? formatTime(data.timestamp) : "");
  if (data.timestamp) time.dateTime = String(data.timestamp);
  meta.append(time);
  if (data.edited_at && !data.deleted) meta.append(el("span", "message-edited", "(edited)"));
  meta.append(el("span", "message-status", pending ? "sending…" : ""));
  if (room && !pending && typeof data.seq === "number" && !data.deleted) meta.append(messageActions(room, data, mine));
  row.append(meta);
  const text = el("div", "message-text", data.deleted ? "message deleted" : data.message);
  text.dataset.testid = "message-text";
  row.append(text);
  if (!data.deleted && Array.isArray(data.attachments) && data.attachments.length) {
    row.append(messageFiles(data.attachments));
  }
  if (room && !pending && !data.deleted) row.append(reactionBar(room, data));
  if (room && data.reply_count > 0 && typeof data.seq === "number") {
    const thread = el("button", "link thread-open", `${data.reply_count} ${data.reply_count === 1 ? "reply" : "replies"}`);
    thread.type = "button";
    thread.dataset.testid = "thread-open";
    thread.addEventListener("click", () => openThread(room, data.seq));
    row.append(thread);
  }
  if (data.seq !== undefined) row.dataset.seq = String(data.seq);
  return row;
}

function actionButton(label, testid, onClick) {
  const button = el("button", "link", label);
  button.type = "button";
  button.dataset.testid = testid;
  button.addEventListener("click", onClick);
  return button;
}

/** Reply, react, thread; edit and delete for the author (delete also for moderators). */
function messageActions(room, data, mine) {
  const box = el("span", "message-actions");
  box.append(actionButton("reply", "reply", () => startCompose("reply", room, data)));
  const picker = el("span", "react-picker");
  for (const emoji of REACTIONS) {
    picker.append(actionButton(emoji, "react", () => react(room, data.seq, emoji)));
  }
  box.append(picker);
  if (mine) box.append(actionButton("edit", "edit", () => startCompose("edit", room, data)));
  if (mine || room.role === "owner" || room.role === "moderator") {
    box.append(actionButton("delete", "delete", () => {
      state.client.delete(room.name, data.seq).catch((err) => showError(`Delete: ${errText(err)}`));
    }));
  }
  return box;
}

function reactionBar(room, data) {
  const bar = el("div", "reactions");
  bar.dataset.testid = "reactions";
  for (const r of Array.isArray(data.reactions) ? data.reactions : []) {
    const chip = el("button", r.me ? "reaction mine" : "reaction", `${r.emoji} ${r.count}`);
    chip.type = "button";
    chip.dataset.testid = "reaction";
    chip.dataset.emoji = String(r.emoji);
    chip.addEventListener("click", () => react(room, data.seq, String(r.emoji), r.me));
    bar.append(chip);
  }
  return bar;
}

function react(room, seq, emoji, remove) {
  state.client.react(room.name, seq, emoji, { remove: Boolean(remove) }).catch((err) => showError(`React: ${errText(err)}`));
}

/** Put a row with `seq` in order: after the last row with a lower seq, before pending rows. */
function insertBySeq(room, row, seq) {
  let node = room.list.lastElementChild;
  while (node && (node.dataset.seq === undefined || Number(node.dataset.seq) > seq)) {
    node = node.previousElementSibling;
  }
  if (node) node.after(row);
  else room.list.prepend(row);
}

/** A stored message (live, joined or history) turns its pending row into a confirmed one. */
function confirmPending(room, cmid, seq, timestamp) {
  const p = room.pending.get(cmid);
  if (!p) return null;
  room.pending.delete(cmid);
  p.el.classList.remove("pending", "failed");
  p.el.dataset.seq = String(seq);
  const status = p.el.querySelector(".message-status");
  if (status) status.textContent = "";
  const retry = p.el.querySelector(".retry");
  if (retry) retry.remove();
  const time = p.el.querySelector(".message-time");
  if (time && timestamp) {
    time.textContent = formatTime(timestamp);
    time.dateTime = String(timestamp);
  }
  p.el.remove();
  insertBySeq(room, p.el, seq);
  room.bySeq.set(seq, p.el);
  if (seq < room.lowestSeq) room.lowestSeq = seq;
  // v2: the confirmed message gets its state and its actions (edit, delete, react, reply)
  if (!room.data.has(seq)) {
    room.data.set(seq, normalised({
      id: `${room.name}:${seq}`,
      seq,
      user_id: state.session ? state.session.userId : "",
      username: state.session ? state.session.username : "",
      message: p.text,
      timestamp: timestamp || "",
      client_msg_id: cmid,
      reply_to: typeof p.replyTo === "number" ? p.replyTo : null,
    }));
  }
  rerender(room, seq);
  return room.bySeq.get(seq);
}

/**
 * Add one stored message. `live` frames follow the per-room rule "ignore seq <= last seen";
 * messages from `joined`/`history` are de-duplicated by seq and inserted in order.
 */
function addMessage(room, data, live) {
  if (!data || typeof data.seq !== "number") return false;
  const seq = data.seq;
  if (live && seq <= room.lastSeq) return false;
  if (seq > room.lastSeq) room.lastSeq = seq;
  if (room.bySeq.has(seq)) return false; // already shown (e.g. our own row after its ack)
  const mine = state.session && data.user_id === state.session.userId;
  if (mine && data.client_msg_id && room.pending.has(data.client_msg_id)) {
    confirmPending(room, data.client_msg_id, seq, data.timestamp);
    return true;
  }
  room.data.set(seq, normalised(data));
  const row = buildMessage(room.data.get(seq), false, room);
  insertBySeq(room, row, seq);
  room.bySeq.set(seq, row);
  if (seq < room.lowestSeq) room.lowestSeq = seq;
  return true;
}

/** A message with the v2 fields a live `message` frame may lack. */
function normalised(data) {
  return {
    ...data,
    reply_to: typeof data.reply_to === "number" ? data.reply_to : null,
    reply_count: Number(data.reply_count) || 0,
    reactions: Array.isArray(data.reactions) ? data.reactions.map((r) => ({ ...r })) : [],
  };
}

/** Rebuild the row of message `seq` from its state (after an edit, a delete, a reaction). */
function rerender(room, seq) {
  const old = room.bySeq.get(seq);
  const data = room.data.get(seq);
  if (!old || !data) return;
  const row = buildMessage(data, false, room);
  old.replaceWith(row);
  room.bySeq.set(seq, row);
}

// ---- v2 room events -----------------------------------------------------------------------
function onRoomEvent(frame) {
  const room = state.rooms.get(frame.room);
  const data = frame.data;
  if (!room || !data || typeof data.seq !== "number") return;
  if (data.seq <= room.lastSeq) return; // already applied (replayed and pushed)
  room.lastSeq = data.seq;
  applyEvent(room, frame.type, data);
}

/** Apply one edit / delete / reaction / member event to the room's messages. */
function applyEvent(room, kind, data) {
  if (typeof data.seq === "number" && data.seq > room.lastSeq) room.lastSeq = data.seq;
  const target = room.data.get(data.target);
  if (kind === "member") {
    const who = data.member && data.member.username ? data.member.username : "someone";
    if (room.name === state.active && data.seq > room.readSent) showInfo(`${who}: ${data.action}`);
    return;
  }
  if (!target) return; // a message not loaded: its state comes with it when it is
  if (kind === "message_edited" && !data.deleted) {
    target.message = String(data.message || "");
    target.edited_at = data.edited_at;
  } else if (kind === "message_deleted") {
    target.deleted = true;
    target.message = "";
    target.reactions = [];
    const parent = room.data.get(target.reply_to);
    if (parent && parent.reply_count > 0) {
      parent.reply_count -= 1;
      rerender(room, parent.seq);
    }
  } else if (kind === "reaction") {
    const mine = state.session && data.user_id === state.session.userId;
    let entry = target.reactions.find((r) => r.emoji === data.emoji);
    if (data.op === "remove") {
      if (entry) {
        entry.count -= 1;
        if (mine) entry.me = false;
        if (entry.count <= 0) target.reactions = target.reactions.filter((r) => r !== entry);
      }
    } else {
      if (!entry) {
        entry = { emoji: data.emoji, count: 0, me: false };
        target.reactions.push(entry);
      }
      entry.count += 1;
      if (mine) entry.me = true;
    }
  }
  rerender(room, data.target);
  if (kind !== "reaction") {
    // quotes of it show its new text (or that it was deleted): never the old text
    for (const [seq, other] of room.data) if (other.reply_to === data.target) rerender(room, seq);
  }
}

function onReadMarker(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  room.readSent = Math.max(room.readSent, Number(frame.seq) || 0);
  if (room.name !== state.active) room.unread = Number(frame.unread) || 0;
  renderRoomList();
}

/** Tell the server how far the active room was read (when it moved). */
function markActiveRead() {
  const room = state.active && state.rooms.get(state.active);
  if (!room || !room.joined || !online() || document.visibilityState === "hidden") return;
  if (room.lastSeq > room.readSent) {
    room.readSent = room.lastSeq;
    state.client.read(room.name, room.lastSeq).then(onReadMarker, () => {});
  }
}

// ---- composing replies and edits ----------------------------------------------------------
function startCompose(mode, room, data) {
  state.compose = { mode, room: room.name, seq: data.seq };
  const what = mode === "edit" ? "Editing your message" : `Replying to ${data.username || "?"}`;
  $("compose-what").textContent = what;
  show($("compose-bar"), true);
  const input = $("message-input");
  if (mode === "edit") input.value = String(data.message || "");
  input.focus();
}

function endCompose() {
  state.compose = null;
  show($("compose-bar"), false);
}

// ---- threads ------------------------------------------------------------------------------
function openThread(room, seq) {
  state.thread = { room: room.name, seq };
  const parent = room.data.get(seq);
  $("thread-title").textContent = parent ? `Thread: ${String(parent.message || "").slice(0, 60)}` : "Thread";
  $("thread-messages").replaceChildren();
  show($("thread-panel"), true);
  state.client.history(room.name, { thread: seq, limit: 100 }).then(onThreadPage, (err) => showError(`Thread: ${errText(err)}`));
}

function onThreadPage(frame) {
  const list = $("thread-messages");
  const room = state.rooms.get(frame.room);
  list.replaceChildren();
  for (const data of Array.isArray(frame.messages) ? frame.messages : []) {
    list.append(buildMessage(normalised(data), false, null));
  }
  if (room && !list.childElementCount) list.append(el("p", "empty", "No replies."));
}

// ---- my rooms, direct messages, moderation ------------------------------------------------
async function loadMyRooms() {
  if (!state.session) return;
  try {
    const body = await api("GET", "/api/me/rooms", undefined, { auth: true });
    for (const row of Array.isArray(body && body.rooms) ? body.rooms : []) {
      if (!row || typeof row.name !== "string" || !ROOM_RE.test(row.name)) continue;
      const room = ensureRoom(row.name);
      room.role = String(row.role || "member");
      room.peer = row.peer && row.peer.username ? String(row.peer.username) : null;
      if (room.name !== state.active) room.unread = Number(row.unread) || 0;
      sendJoin(room);
    }
    renderRoomList();
  } catch (err) {
    if (state.session) sideMessage(`Rooms: ${errText(err)}`);
  }
}

async function onOpenDm(event) {
  event.preventDefault();
  const input = $("dm-input");
  const username = input.value.trim().replace(/^@/, "");
  if (!USERNAME_RE.test(username)) {
    sideMessage("Username must be 3–32 letters, digits or _.");
    return;
  }
  try {
    const body = await api("POST", "/api/dms", { username }, { auth: true });
    input.value = "";
    const room = ensureRoom(body.room);
    room.peer = body.peer && body.peer.username ? String(body.peer.username) : username;
    joinRoom(body.room);
  } catch (err) {
    sideMessage(`Message @${username}: ${errText(err)}`);
  }
}

async function moderate(room, username, action) {
  const base = `/api/rooms/${encodeURIComponent(room.name)}`;
  try {
    if (action === "ban") await api("POST", `${base}/bans`, { username }, { auth: true });
    else if (action === "mute") await api("POST", `${base}/mutes`, { username, duration_s: 600 }, { auth: true });
    else if (action === "moderator") await api("PUT", `${base}/members/${encodeURIComponent(username)}`, { role: "moderator" }, { auth: true });
    else if (action === "remove") await api("DELETE", `${base}/members/${encodeURIComponent(username)}`, undefined, { auth: true });
    sideMessage("", `${username}: ${action} done`);
  } catch (err) {
    showError(`${action} ${username}: ${errText(err)}`);
  }
}

let infoTimer = null;
function showInfo(text) {
  setText($("side-info"), text);
  clearTimeout(infoTimer);
  infoTimer = setTimeout(() => setText($("side-info"), ""), 4000);
}

function onMessage(frame) {
  const room = state.rooms.get(frame.room);
  if (!room || !frame.data) return;
  const nearBottom = isNearBottom();
  if (!addMessage(room, frame.data, room.everJoined)) return;
  const parent = room.data.get(frame.data.reply_to);
  if (parent) {
    parent.reply_count += 1;
    rerender(room, parent.seq);
  }
  if (room.name === state.active) markActiveRead();
  clearTypingFor(room, String(frame.data.user_id || ""));
  const mine = state.session && frame.data.user_id === state.session.userId;
  if (room.name === state.active) {
    updateEmptyState();
    if (nearBottom || mine) scrollToBottom();
  } else if (!mine && room.everJoined) {
    // (a first join's replay arrives before its `joined` frame: those are not new to the user)
    room.unread += 1;
    renderRoomList();
  }
}

function onAck(frame) {
  const room = state.rooms.get(frame.room);
  if (!room || !frame.client_msg_id || typeof frame.seq !== "number") return;
  if (room.bySeq.has(frame.seq)) {
    // the message frame came first; drop a pending row it did not match
    const p = room.pending.get(frame.client_msg_id);
    if (p && p.el !== room.bySeq.get(frame.seq)) p.el.remove();
    room.pending.delete(frame.client_msg_id);
    return;
  }
  // Does not move lastSeq: earlier messages of others may still be on their way.
  confirmPending(room, frame.client_msg_id, frame.seq, frame.timestamp);
}

/** Send a pending message through the SDK: it waits while offline, is resent after a reconnect
 * and retried while `unavailable` / `rate_limited`, always with the same client_msg_id, so the
 * server stores it once; the promise gives its ack, or the error once the SDK gives up (30 s). */
function sendPending(room, cmid, p) {
  if (!state.client) return;
  const options = { clientMsgId: cmid, replyTo: typeof p.replyTo === "number" ? p.replyTo : null, attachments: p.attachments };
  state.client.send(room.name, p.text, options).then(
    (ack) => onAck(ack),
    (err) => {
      if (room.pending.get(cmid) !== p || !state.client) return;
      const code = err instanceof RequestError ? err.code : "";
      markFailed(room, cmid, p, code === "rate_limited" ? `slow down (${errText(err)})` : errText(err));
    },
  );
}

function markFailed(room, cmid, p, message) {
  p.failed = true;
  p.el.classList.remove("pending");
  p.el.classList.add("failed");
  const status = p.el.querySelector(".message-status");
  if (status) status.textContent = `not sent: ${message}`;
  if (!p.el.querySelector(".retry")) {
    const retry = el("button", "link retry", "retry");
    retry.type = "button";
    retry.addEventListener("click", () => {
      p.failed = false;
      p.el.classList.remove("failed");
      p.el.classList.add("pending");
      if (status) status.textContent = "sending…";
      retry.remove();
      sendPending(room, cmid, p);
    });
    p.el.querySelector(".message-meta").append(retry);
  }
}

// ---- attachments (PROTOCOL.md section 11) ---------------------------------------------------
/** Upload one file to the active room; it waits in the bar until the next message is sent. */
async function uploadFile(file) {
  const room = state.active && state.rooms.get(state.active);
  if (!room || !state.session) return;
  let data;
  try {
    data = await state.http.upload(room.name, file, file.name || "pasted");
  } catch (err) {
    showError(`Upload refused: ${errText(err)}`);
    return;
  }
  state.queued.push({ room: room.name, info: data });
  renderQueued();
}

function renderQueued() {
  const bar = $("attachments-bar");
  bar.replaceChildren();
  const mine = state.queued.filter((q) => q.room === state.active);
  for (const q of mine) {
    const chip = el("span", "attachment-chip", `📎 ${q.info.name}`);
    chip.dataset.testid = "queued-attachment";
    const drop = el("button", "link", "×");
    drop.type = "button";
    drop.addEventListener("click", () => {
      state.queued = state.queued.filter((other) => other !== q);
      renderQueued();
    });
    chip.append(drop);
    bar.append(chip);
  }
  show(bar, mine.length > 0);
}

/** Fetch an attachment with the session's token and hand back an object URL for it. */
async function attachmentUrl(id, thumb) {
  return URL.createObjectURL(await state.http.download(id, { thumb }));
}

function fileSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** The files of a message: image thumbnails inline (click: the full image), others as links. */
function messageFiles(files) {
  const box = el("div", "message-files");
  for (const file of files) {
    if (!file || typeof file.attachment_id !== "string") continue;
    if (file.width && String(file.content_type).startsWith("image/")) {
      const img = document.createElement("img");
      img.alt = String(file.name || "image");
      img.dataset.testid = "message-image";
      attachmentUrl(file.attachment_id, true).then((url) => { img.src = url; }).catch(() => { img.alt = "image unavailable"; });
      img.addEventListener("click", () => {
        attachmentUrl(file.attachment_id, false).then((url) => window.open(url, "_blank", "noopener")).catch(() => {});
      });
      box.append(img);
    } else {
      const link = el("button", "link message-file", `📎 ${file.name} (${fileSize(Number(file.size) || 0)})`);
      link.type = "button";
      link.dataset.testid = "message-file";
      link.addEventListener("click", () => {
        attachmentUrl(file.attachment_id, false).then((url) => {
          const a = document.createElement("a");
          a.href = url;
          a.download = String(file.name || "file");
          a.click();
        }).catch(() => showError("Attachment unavailable."));
      });
      box.append(link);
    }
  }
  return box;
}

function sendChat() {
  const input = $("message-input");
  const room = state.active && state.rooms.get(state.active);
  if (!room) return;
  const files = state.queued.filter((q) => q.room === room.name);
  // a message's text is 1..4000 characters (section 1): a file alone is sent with its name
  const text = input.value.trim() || files.map((q) => q.info.name).join(", ");
  if (!text) return;
  if (text.length > MAX_MESSAGE_CHARS) {
    showError(`A message is at most ${MAX_MESSAGE_CHARS} characters.`);
    return;
  }
  const compose = state.compose && state.compose.room === room.name ? state.compose : null;
  if (compose && compose.mode === "edit") {
    state.client.edit(room.name, compose.seq, text).catch((err) => showError(`Edit: ${errText(err)}`));
    endCompose();
    input.value = "";
    autoGrow(input);
    return;
  }
  const replyTo = compose && compose.mode === "reply" ? compose.seq : null;
  endCompose();
  const cmid = crypto.randomUUID();
  const attachments = files.map((q) => q.info.attachment_id);
  state.queued = state.queued.filter((q) => !files.includes(q));
  renderQueued();
  const row = buildMessage(
    { username: state.session.username, user_id: state.session.userId, message: text, reply_to: replyTo },
    true,
    room,
  );
  row.dataset.clientMsgId = cmid;
  room.list.append(row);
  const p = { text, el: row, failed: false, replyTo, attachments };
  room.pending.set(cmid, p);
  sendPending(room, cmid, p);
  input.value = "";
  autoGrow(input);
  state.lastTypingSent = 0;
  updateEmptyState();
  scrollToBottom();
}

// ---- history ------------------------------------------------------------------------------
function loadOlder() {
  const room = state.active && state.rooms.get(state.active);
  if (!room || !room.joined || room.historyPending || !room.hasMore) return;
  const before = room.lowestSeq !== Infinity ? room.lowestSeq : undefined;
  room.historyPending = true;
  renderHistoryBar();
  state.client.history(room.name, { before, limit: HISTORY_PAGE }).then(onHistory, (err) => {
    room.historyPending = false;
    renderHistoryBar();
    showError(`History: ${errText(err)}`);
  });
}

function onHistory(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  room.historyPending = false;
  const scroller = $("messages-scroll");
  const before = scroller.scrollHeight - scroller.scrollTop;
  const messages = Array.isArray(frame.messages) ? frame.messages : [];
  for (const data of messages) addMessage(room, data, false);
  room.hasMore = Boolean(frame.has_more) && room.lowestSeq > 1;
  if (room.name === state.active) {
    renderHistoryBar();
    updateEmptyState();
    scroller.scrollTop = scroller.scrollHeight - before; // keep the view where it was
  }
}

// ---- typing -------------------------------------------------------------------------------
function onTyping(frame) {
  const room = state.rooms.get(frame.room);
  if (!room || !frame.user_id) return;
  const id = String(frame.user_id);
  if (state.session && id === state.session.userId) return;
  const old = room.typing.get(id);
  if (old) clearTimeout(old.timer);
  const timer = setTimeout(() => clearTypingFor(room, id), TYPING_SHOW_MS);
  room.typing.set(id, { username: String(frame.username || id), timer });
  if (room.name === state.active) renderTyping();
}

function clearTypingFor(room, userId) {
  const t = room.typing.get(userId);
  if (!t) return;
  clearTimeout(t.timer);
  room.typing.delete(userId);
  if (room.name === state.active) renderTyping();
}

function onComposerInput() {
  autoGrow($("message-input"));
  const room = state.active && state.rooms.get(state.active);
  if (!room || !room.joined || !$("message-input").value.trim()) return;
  const now = Date.now();
  if (now - state.lastTypingSent >= TYPING_SEND_INTERVAL_MS) {
    state.lastTypingSent = now;
    state.client.typing(room.name); // no answer; dropped while offline
  }
}

function autoGrow(input) {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

// ---- notifications ------------------------------------------------------------------------
function renderBell() {
  const count = $("bell-count");
  count.textContent = String(state.unread);
  count.classList.toggle("zero", state.unread === 0);
  $("bell").title = state.unread ? `${state.unread} unread notifications` : "Notifications";
  show($("notifications-empty"), state.notifications.size === 0);
}

function buildNotification(data) {
  const item = el("li", `notification type-${safeType(data.notification_type)}`);
  item.dataset.testid = "notification";
  item.dataset.id = String(data.id);
  const meta = data.metadata && typeof data.metadata === "object" ? data.metadata : {};
  if (typeof meta.room === "string" && ROOM_RE.test(meta.room)) item.dataset.room = meta.room;
  const body = el("div", "notification-body");
  body.append(el("div", "notification-title", data.title || "Notification"));
  body.append(el("div", "notification-message", data.message || ""));
  body.append(el("time", "notification-time", data.timestamp ? formatTime(data.timestamp) : ""));
  item.append(body);
  const mark = el("button", "link mark-read", "Mark read");
  mark.type = "button";
  mark.dataset.testid = "mark-read";
  mark.addEventListener("click", (event) => {
    event.stopPropagation();
    markRead([String(data.id)]);
  });
  item.append(mark);
  if (item.dataset.room) {
    body.classList.add("clickable");
    body.title = `Open ${item.dataset.room}`;
    body.addEventListener("click", () => {
      markRead([String(data.id)]);
      joinRoom(item.dataset.room);
      closePanel();
    });
  }
  return item;
}

function safeType(value) {
  return ["info", "warning", "error", "success"].includes(value) ? value : "info";
}

function setNotificationRead(entry, read) {
  entry.data.read = read;
  entry.el.classList.toggle("unread", !read);
  entry.el.querySelector(".mark-read").hidden = read;
}

/** Add (or update) a notification; returns true when it was new. */
function upsertNotification(data) {
  if (!data || data.id === undefined || data.id === null) return false;
  const id = String(data.id);
  let entry = state.notifications.get(id);
  const isNew = !entry;
  if (!entry) {
    entry = { data: { ...data }, el: buildNotification(data) };
    state.notifications.set(id, entry);
    insertNotification(entry);
  }
  setNotificationRead(entry, Boolean(data.read));
  return isNew;
}

function insertNotification(entry) {
  // newest first, by timestamp
  const list = $("notifications-list");
  const ts = String(entry.data.timestamp || "");
  let node = /** @type {HTMLElement|null} */ (list.firstElementChild);
  while (node) {
    const other = state.notifications.get(node.dataset.id);
    if (other && String(other.data.timestamp || "") < ts) break;
    node = /** @type {HTMLElement|null} */ (node.nextElementSibling);
  }
  list.insertBefore(entry.el, node);
}

/** `notifications` summary (after auth_success, on request, and as the mark_read answer). */
function onNotificationSummary(frame) {
  for (const data of Array.isArray(frame.items) ? frame.items : []) upsertNotification(data);
  if (typeof frame.unread === "number") state.unread = Math.max(0, frame.unread);
  renderBell();
}

function onNotification(data) {
  if (!data) return;
  const isNew = upsertNotification({ ...data, read: Boolean(data.read) });
  if (isNew && !data.read) state.unread += 1;
  renderBell();
}

function markRead(ids) {
  const all = ids === null;
  for (const entry of state.notifications.values()) {
    if (!all && !ids.includes(String(entry.data.id))) continue;
    if (!all && !entry.data.read) state.unread = Math.max(0, state.unread - 1);
    setNotificationRead(entry, true);
  }
  if (all) state.unread = 0;
  renderBell();
  const done = all ? state.client.markRead({ all: true }) : state.client.markRead({ ids });
  done.then(onNotificationSummary, () => {});
}

function onBroadcast(data) {
  if (!data) return;
  const toast = el("div", `toast type-${safeType(data.notification_type)}`);
  toast.dataset.testid = "toast";
  toast.setAttribute("role", "status");
  toast.append(el("div", "toast-title", data.title || "Announcement"));
  toast.append(el("div", "toast-message", data.message || ""));
  const close = el("button", "toast-close", "×");
  close.type = "button";
  close.setAttribute("aria-label", "Dismiss");
  close.addEventListener("click", () => toast.remove());
  toast.append(close);
  $("toasts").append(toast);
  setTimeout(() => toast.remove(), 10000);
}

function openPanel() {
  show($("notifications-panel"), true);
  $("bell").setAttribute("aria-expanded", "true");
}

function closePanel() {
  show($("notifications-panel"), false);
  $("bell").setAttribute("aria-expanded", "false");
}

// ---- rendering ----------------------------------------------------------------------------
function roomLabel(room) {
  return room.peer ? `@${room.peer}` : `#${room.name}`;
}

function renderRoomList() {
  const list = $("room-list");
  list.replaceChildren();
  $("dm-list").replaceChildren();
  for (const room of state.rooms.values()) {
    const item = el("li", "room-item");
    item.dataset.room = room.name;
    item.dataset.testid = "room-item";
    if (room.name === state.active) item.classList.add("active");
    const open = el("button", "room-open");
    open.type = "button";
    if (room.peer) open.append(el("span", "room-name", `@${room.peer}`));
    else {
      open.append(el("span", "room-hash", "#"));
      open.append(el("span", "room-name", room.name));
    }
    if (room.unread) {
      const badge = el("span", "room-unread", room.unread > 99 ? "99+" : room.unread);
      badge.dataset.testid = "room-unread";
      open.append(badge);
    }
    if (!room.joined) open.classList.add("not-joined");
    open.addEventListener("click", () => {
      setActive(room.name);
      renderActive();
      scrollToBottom();
      $("message-input").focus();
    });
    const leave = el("button", "room-leave", "×");
    leave.type = "button";
    leave.title = `Leave ${room.name}`;
    leave.setAttribute("aria-label", `Leave ${room.name}`);
    leave.addEventListener("click", () => leaveRoom(room.name));
    item.append(open, leave);
    (room.name.startsWith("dm-") ? $("dm-list") : list).append(item);
  }
  show($("room-list-empty"), state.rooms.size === 0);
}

function renderOnline() {
  const room = state.active && state.rooms.get(state.active);
  const list = $("online-list");
  list.replaceChildren();
  $("online-room").textContent = room ? `in #${room.name}` : "";
  if (!room) return;
  const users = Array.from(room.online.entries()).sort((a, b) => a[1].localeCompare(b[1]));
  for (const [id, name] of users) {
    const item = el("li", "online-user");
    item.dataset.userId = id;
    item.append(el("span", "dot"));
    item.append(el("span", "online-name", name));
    if (state.session && id === state.session.userId) item.append(el("span", "muted", " (you)"));
    else if (room.role === "owner" || room.role === "moderator") {
      const actions = el("span", "user-actions");
      actions.append(actionButton("mute", "mute-user", () => moderate(room, name, "mute")));
      actions.append(actionButton("ban", "ban-user", () => moderate(room, name, "ban")));
      if (room.role === "owner") actions.append(actionButton("mod", "mod-user", () => moderate(room, name, "moderator")));
      item.append(actions);
    }
    list.append(item);
  }
}

function renderTyping() {
  const room = state.active && state.rooms.get(state.active);
  const names = room ? Array.from(room.typing.values()).map((t) => t.username) : [];
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = "Several people are typing…";
  $("typing").textContent = text;
}

function renderHistoryBar() {
  const room = state.active && state.rooms.get(state.active);
  const more = Boolean(room && room.hasMore);
  const button = $("load-older");
  show(button, more);
  button.disabled = Boolean(room && room.historyPending);
  button.textContent = room && room.historyPending ? "Loading…" : "Load older messages";
  show($("history-start"), Boolean(room && room.joined && !room.hasMore && room.bySeq.size));
}

function updateEmptyState() {
  const room = state.active && state.rooms.get(state.active);
  const empty = $("messages-empty");
  if (!room) {
    empty.textContent = "Join a room to start chatting.";
    show(empty, true);
  } else if (!room.joined && !room.bySeq.size) {
    empty.textContent = "Joining…";
    show(empty, true);
  } else {
    empty.textContent = "No messages yet. Say hello!";
    show(empty, room.list.childElementCount === 0);
  }
}

function renderActive() {
  const room = state.active && state.rooms.get(state.active);
  const container = $("messages");
  if (room) {
    if (container.firstElementChild !== room.list) container.replaceChildren(room.list);
  } else {
    container.replaceChildren();
  }
  $("room-title").textContent = room ? roomLabel(room) : "No room selected";
  show($("member-form"), Boolean(room));
  const canSend = Boolean(room);
  $("message-input").disabled = !canSend;
  $("send-button").disabled = !canSend;
  $("attach-button").disabled = !canSend;
  $("message-input").placeholder = room
    ? `Message ${roomLabel(room)} (Enter to send, Shift+Enter for a new line)`
    : "Join a room first";
  renderRoomList();
  renderOnline();
  renderTyping();
  renderHistoryBar();
  renderQueued();
  updateEmptyState();
}

function isNearBottom() {
  const s = $("messages-scroll");
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

function scrollToBottom() {
  const s = $("messages-scroll");
  s.scrollTop = s.scrollHeight;
}

// ---- available rooms, private rooms, members ----------------------------------------------
let sideTimer = null;
function sideMessage(error, info) {
  setText($("side-error"), error || "");
  setText($("side-info"), info || "");
  clearTimeout(sideTimer);
  sideTimer = setTimeout(() => {
    setText($("side-error"), "");
    setText($("side-info"), "");
  }, 6000);
}

async function loadAvailableRooms() {
  if (!state.session) return;
  try {
    const body = await api("GET", "/api/rooms", undefined, { auth: true });
    const rooms = Array.isArray(body) ? body : body && Array.isArray(body.rooms) ? body.rooms : [];
    const list = $("available-rooms");
    list.replaceChildren();
    for (const r of rooms) {
      const name = typeof r === "string" ? r : r && r.name;
      if (typeof name !== "string" || !ROOM_RE.test(name)) continue;
      const item = el("li", "available-room");
      item.dataset.room = name;
      const button = el("button", "link");
      button.type = "button";
      button.append(el("span", "room-name", `${r.private ? "🔒 " : "#"}${name}`));
      const online = Number(r.online);
      if (Number.isFinite(online) && online > 0) button.append(el("span", "muted", ` · ${online} online`));
      button.addEventListener("click", () => joinRoom(name));
      item.append(button);
      list.append(item);
    }
    if (!list.childElementCount) list.append(el("li", "empty", "No rooms yet."));
  } catch (err) {
    if (state.session) sideMessage(`Rooms: ${errText(err)}`);
  }
}

function roomNameFrom(input) {
  const name = input.value.trim().toLowerCase().replace(/^#/, "");
  if (!ROOM_RE.test(name)) {
    sideMessage("Room names: a–z, 0–9, _ and -, starting with a letter or digit, at most 64.");
    return null;
  }
  return name;
}

function onJoinSubmit(event) {
  event.preventDefault();
  const input = $("room-input");
  const name = roomNameFrom(input);
  if (!name) return;
  input.value = "";
  joinRoom(name);
  $("message-input").focus();
}

async function onCreateRoom(event) {
  event.preventDefault();
  const input = $("private-room-input");
  const name = roomNameFrom(input);
  if (!name) return;
  $("create-room-button").disabled = true;
  try {
    await api("POST", "/api/rooms", { name, private: true }, { auth: true });
    input.value = "";
    sideMessage("", `Private room ${name} created.`);
    ensureRoom(name).role = "owner";
    joinRoom(name);
    loadAvailableRooms();
  } catch (err) {
    sideMessage(err.message);
  } finally {
    $("create-room-button").disabled = false;
  }
}

async function onAddMember(event) {
  event.preventDefault();
  const room = state.active;
  const input = $("member-input");
  const username = input.value.trim().replace(/^@/, "");
  if (!room) return;
  if (!USERNAME_RE.test(username)) {
    showError("Username must be 3–32 letters, digits or _.");
    return;
  }
  $("add-member-button").disabled = true;
  try {
    await api("POST", `/api/rooms/${encodeURIComponent(room)}/members`, { username }, { auth: true });
    input.value = "";
    sideMessage("", `${username} can now join ${room}.`);
  } catch (err) {
    showError(`Add member: ${err.message}`);
  } finally {
    $("add-member-button").disabled = false;
  }
}

// ---- wiring -------------------------------------------------------------------------------
function init() {
  $("auth-form").addEventListener("submit", onLoginSubmit);
  $("register-button").addEventListener("click", onRegister);
  $("logout-button").addEventListener("click", onLogout);
  $("join-form").addEventListener("submit", onJoinSubmit);
  $("create-room-form").addEventListener("submit", onCreateRoom);
  $("member-form").addEventListener("submit", onAddMember);
  $("dm-form").addEventListener("submit", onOpenDm);
  $("compose-cancel").addEventListener("click", () => {
    endCompose();
    $("message-input").value = "";
  });
  $("thread-close").addEventListener("click", () => show($("thread-panel"), false));
  $("rooms-refresh").addEventListener("click", (event) => {
    event.preventDefault();
    loadAvailableRooms();
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    sendChat();
  });
  $("attach-button").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", async () => {
    const input = $("file-input");
    for (const file of Array.from(input.files || [])) await uploadFile(file);
    input.value = "";
  });
  $("message-input").addEventListener("paste", async (event) => {
    const files = Array.from((event.clipboardData && event.clipboardData.files) || []);
    if (!files.length) return;
    event.preventDefault();
    for (const file of files) await uploadFile(file);
  });
  const input = $("message-input");
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendChat();
    }
  });
  input.addEventListener("input", onComposerInput);
  $("load-older").addEventListener("click", loadOlder);
  $("messages-scroll").addEventListener("scroll", () => {
    if ($("messages-scroll").scrollTop < 40) loadOlder();
  });
  $("bell").addEventListener("click", (event) => {
    event.stopPropagation();
    if ($("notifications-panel").hidden) openPanel();
    else closePanel();
  });
  $("notifications-panel").addEventListener("click", (event) => event.stopPropagation());
  document.addEventListener("click", () => closePanel());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closePanel();
  });
  $("mark-all-read").addEventListener("click", () => markRead(null));
  window.addEventListener("online", () => state.client && state.client.reconnectNow());
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible" || !state.client || state.stopped) return;
    // back from sleep: a token that is (nearly) expired is refreshed, a dead socket replaced
    if (state.session && state.session.expiresAt - Date.now() < 60000) state.client.refreshNow().catch(() => {});
    state.client.reconnectNow();
  });
  renderBell();
  renderActive();

  const saved = loadSession();
  if (saved) state.http.setTokens(saved);
  if (state.session) startChat();
  else showAuthView("");
}


if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
