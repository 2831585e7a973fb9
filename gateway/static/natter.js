/**
 * natter JavaScript SDK: an ES module for browsers and Node.js 20+ (no build step, no
 * dependencies). Served by every gateway at `/sdk/natter.js`.
 *
 * It speaks natter's client protocol (PROTOCOL.md; docs/protocol.md) the way the Python SDK
 * (`natter.sdk`, docs/sdk.md) does:
 *
 * - {@link NatterHttp}: the HTTP API (register, login, refresh with rotation, rooms, DMs,
 *   moderation, history, attachments, posting); it holds the tokens and refreshes them once at
 *   a time (a rotated refresh token used twice revokes the session).
 * - {@link NatterClient}: one WebSocket at a time to one of several gateway URLs, first-message
 *   authentication (the token never appears in a URL), the access token refreshed before it
 *   expires and presented on the live socket, reconnect with full-jitter exponential backoff
 *   rotating through the URLs, every joined room re-joined with `since` (recovery, section 4),
 *   every unanswered request resent (a send keeps its `client_msg_id`, so the server stores it
 *   once and answers the original `ack`), and each room's events handed out once and in `seq`
 *   order by a {@link Sequencer}.
 *
 * Units: durations are milliseconds, times are epoch milliseconds (`Date.now()`), except where a
 * protocol field says otherwise (`retry_after` is seconds, `expires_at` epoch seconds).
 *
 * Node.js 20: start node with `--experimental-websocket` (Node 22 has WebSocket by default), or
 * pass any WHATWG-compatible constructor as `new NatterClient({WebSocket})`.
 *
 * @module natter
 */

// ---- protocol constants -------------------------------------------------------------------------

/** Pushed frames that are room events, ordered by `seq` (PROTOCOL.md section 8). */
export const ROOM_EVENT_TYPES = new Set(["message", "message_edited", "message_deleted", "reaction", "member"]);
/** `join` errors after which a room is given up (the error is emitted as a frame). */
const ROOM_GONE_CODES = new Set(["forbidden", "room_not_found", "invalid_room"]);
/** Close-1008 reasons that end the session (docs/protocol.md, Authentication). */
const FATAL_CLOSE_REASONS = new Set(["auth failed", "session revoked"]);
/** A socket that lived this long (ms) resets the reconnect backoff. */
const STABLE_AFTER_MS = 5000;
/** Reconnecting refreshes first when the access token expires within this many ms. */
const MIN_TOKEN_VALIDITY_MS = 5000;
/** HTTP calls refresh first when the access token expires within this many ms. */
const HTTP_TOKEN_MARGIN_MS = 10000;

// ---- errors --------------------------------------------------------------------------------------

/** Base class of every SDK error. */
export class NatterError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * The server answered a request with an `error` frame (PROTOCOL.md section 7).
 * `code` is the protocol code (`forbidden`, `not_joined`, `rate_limited`, ...), `retryAfter`
 * the seconds to wait (`rate_limited`), `details` the validation details, `frame` the frame.
 */
export class RequestError extends NatterError {
  /** @param {Record<string, any>} frame the `error` frame */
  constructor(frame) {
    super(`${frame.code}: ${frame.message || frame.code}`);
    /** @type {string} */ this.code = String(frame.code || "internal");
    /** @type {number|null} */ this.retryAfter = typeof frame.retry_after === "number" ? frame.retry_after : null;
    /** @type {any[]|null} */ this.details = Array.isArray(frame.details) ? frame.details : null;
    /** @type {Record<string, any>} */ this.frame = frame;
  }
}

/** An HTTP API error (PROTOCOL.md section 6): `status`, `code` (section 7) and `detail`. */
export class HttpError extends NatterError {
  /**
   * @param {number} status HTTP status (0: the server could not be reached)
   * @param {string} detail the `detail` text
   * @param {{code?: string|null, retryAfter?: number|null, body?: any}} [extra]
   */
  constructor(status, detail, extra = {}) {
    super(`HTTP ${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
    this.code = extra.code || null;
    this.retryAfter = extra.retryAfter ?? null;
    this.body = extra.body ?? null;
  }
}

/**
 * The session ended: the token was refused (`reason` "auth failed"), the session was revoked
 * ("session revoked", e.g. logout elsewhere or a password change), or the refresh token was
 * rejected ("refresh rejected"). The client stops; log in again.
 */
export class AuthError extends NatterError {
  /** @param {string} reason @param {string} [message] */
  constructor(reason, message = "") {
    super(message ? `${reason}: ${message}` : reason);
    this.reason = reason;
  }
}

/** No answer before the request's deadline. */
export class RequestTimeout extends NatterError {}
/** The socket closed before the answer of a request that is not resent. */
export class ConnectionLost extends NatterError {}
/** The client was closed. */
export class ClientClosed extends NatterError {}

// ---- small pure helpers --------------------------------------------------------------------------

/**
 * Full-jitter exponential backoff (AWS Architecture Blog, "Exponential Backoff And Jitter"):
 * attempt n waits a uniform random time in [0, min(cap, base * 2^n)).
 */
export class Backoff {
  /** @param {number} baseMs ceiling of the first delay @param {number} capMs largest ceiling @param {() => number} [random] */
  constructor(baseMs = 200, capMs = 10000, random = Math.random) {
    if (!(baseMs > 0) || capMs < baseMs) throw new RangeError("need 0 < base <= cap");
    this.baseMs = baseMs;
    this.capMs = capMs;
    this.random = random;
    this.attempt = 0;
  }

  /** The upper bound of the next delay, ms. */
  ceiling() {
    return Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.attempt, 30));
  }

  /** The delay before the next attempt (ms); counts one more attempt. */
  next() {
    const delay = this.random() * this.ceiling();
    this.attempt += 1;
    return delay;
  }

  /** After a success: the next delay is at most `baseMs` again. */
  reset() {
    this.attempt = 0;
  }
}

/**
 * The claims of a JWT, unverified (the server verifies; the client only reads `exp` / `iat`).
 * @param {string} token
 * @returns {Record<string, any>} `{}` when it cannot be read
 */
export function jwtClaims(token) {
  try {
    const part = String(token).split(".")[1];
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const text = typeof atob === "function" ? atob(b64) : Buffer.from(b64, "base64").toString("binary");
    const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : {};
  } catch (_err) {
    return {};
  }
}

/**
 * When to refresh a token (epoch ms): `leadMs` before expiry, but never before `fraction` of its
 * lifetime has passed (a 15-minute token 60 s before it expires, a 10 s one at 8 s).
 * @param {{issuedAt: number, expiresAt: number, leadMs?: number, fraction?: number}} t
 */
export function refreshAt({ issuedAt, expiresAt, leadMs = 60000, fraction = 0.8 }) {
  const lifetime = Math.max(0, expiresAt - issuedAt);
  return Math.max(issuedAt + fraction * lifetime, expiresAt - leadMs);
}

/** A new UUID4 (`crypto.randomUUID`), the default `client_msg_id`. */
function uuid() {
  return globalThis.crypto.randomUUID();
}

/** The fields of `fields` that are not null/undefined. @returns {Record<string, any>} */
function compact(fields) {
  /** @type {Record<string, any>} */
  const out = {};
  for (const [key, value] of Object.entries(fields)) if (value !== undefined && value !== null) out[key] = value;
  return out;
}

/** A frame of `type` with the fields that are not null/undefined. @returns {Record<string, any>} */
function frameOf(type, fields = {}) {
  return { type, ...compact(fields) };
}

/** A positive integer `seq` of a `data` object, else null. */
function seqOf(data) {
  const seq = data && typeof data === "object" ? data.seq : undefined;
  return Number.isInteger(seq) && seq >= 1 ? seq : null;
}

/** @param {number} ms @param {AbortSignal} [signal] resolves early when `signal` aborts */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, Math.max(0, ms));
    if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); resolve(undefined); }, { once: true });
  });
}

/** `ws://h/ws` -> `http://h`: the HTTP API of a gateway WebSocket URL. */
export function httpBaseOf(wsUrl) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = url.pathname.replace(/\/ws\/?$/, "") || "/";
  url.search = "";
  url.hash = "";
  return url.toString().replace(/\/$/, "");
}

// ---- the room event sequencer (pure) -------------------------------------------------------------

/**
 * @typedef {Record<string, any>} Frame a protocol frame (`{type, ...}`)
 * @typedef {{deliver: Frame[], fill: number|null}} Outcome hand `deliver` to the user in order; when
 *   `fill` is a number, send `join` with `since = fill` for that room
 * @typedef {{last: number|null, filling: boolean, held: Map<number, Frame>}} RoomState
 */

/** A pushed-style frame for a stored room event `data` (`message`, or the type a replayed item names). */
function eventFrame(room, data) {
  const kind = data && ROOM_EVENT_TYPES.has(data.type) ? data.type : "message";
  return { type: kind, room, data };
}

/** The SDK's `gap` frame: events `after < seq < before` of `room` cannot be recovered. */
function gapFrame(room, after, before) {
  return { type: "gap", room, after, before };
}

/**
 * Per-room de-duplication, ordering and gap detection of room events (the rule of PROTOCOL.md
 * section 4: a room's `seq` grows by exactly 1 per event; `join` with `since` closes a gap).
 * The same algorithm as the Python SDK's `natter.sdk.dedup.Sequencer`:
 *
 * - `seq <= last`: a duplicate, dropped;
 * - `seq == last + 1` (and no fill in flight): handed out, then the held ones that now follow;
 * - `seq > last + 1`: held, and a fill (`join` + `since = last`) requested;
 * - a `joined` answer hands out its events above `last`, then the held ones that follow.
 *
 * When storage cannot return what is missing (`recovered: false`), a `gap` frame
 * `{type:"gap", room, after, before}` is handed out so the application can page back.
 */
export class Sequencer {
  /** @param {number} [maxHeld] frames held per room past a gap before the gap is given up */
  constructor(maxHeld = 10000) {
    this.maxHeld = maxHeld;
    /** @type {Map<string, RoomState>} */
    this.rooms = new Map();
  }

  /** Start tracking `room` (before its first `joined`). */
  track(room) {
    if (!this.rooms.has(room)) this.rooms.set(room, { last: null, filling: false, held: new Map() });
  }

  /** Stop tracking `room`: its frames are dropped from now on. */
  forget(room) {
    this.rooms.delete(room);
  }

  /** @returns {boolean} */
  tracked(room) {
    return this.rooms.has(room);
  }

  /** The highest `seq` handed out for `room` (null: none yet). */
  lastSeq(room) {
    const state = this.rooms.get(room);
    return state ? state.last : null;
  }

  /** Mark a fill in flight for `room`: frames are held until its answer. Returns the `since`. */
  beginFill(room) {
    this.track(room);
    const state = /** @type {RoomState} */ (this.rooms.get(room));
    state.filling = true;
    return state.last;
  }

  /** A pushed room event frame. @param {Frame} frame @returns {Outcome} */
  push(frame) {
    const room = frame.room;
    const seq = seqOf(frame.data);
    const state = typeof room === "string" ? this.rooms.get(room) : undefined;
    if (!state || seq === null) return { deliver: [], fill: null };
    if (state.last !== null && seq <= state.last) return { deliver: [], fill: null };
    if (state.last === null || state.filling) {
      if (!state.held.has(seq)) state.held.set(seq, frame);
      return { deliver: this.bound(room, state), fill: null };
    }
    if (seq === state.last + 1) {
      state.last = seq;
      return { deliver: [frame, ...this.drain(state)], fill: null };
    }
    if (!state.held.has(seq)) state.held.set(seq, frame);
    state.filling = true;
    return { deliver: this.bound(room, state), fill: state.last };
  }

  /**
   * A `joined` answer (`last_seq`, `messages` oldest first, `recovered`).
   * @param {string} room @param {Frame} answer @param {number|null} since the `since` sent
   * @param {boolean} [replay] on a first join without `since`, hand out the answer's events
   * @returns {Outcome}
   */
  joined(room, answer, since, replay = true) {
    this.track(room);
    const state = /** @type {RoomState} */ (this.rooms.get(room));
    const lastSeq = Number.isInteger(answer.last_seq) ? answer.last_seq : null;
    const stored = (Array.isArray(answer.messages) ? answer.messages : [])
      .map((data) => [seqOf(data), data])
      .filter(([seq]) => seq !== null)
      .sort((a, b) => a[0] - b[0]);
    if (state.last === null) {
      if (since !== null && since !== undefined) state.last = since;
      else if (!replay || !stored.length) state.last = lastSeq || 0;
      else state.last = stored[0][0] - 1;
    }
    /** @type {Frame[]} */
    const out = [];
    for (const [seq, data] of stored) {
      if (seq <= state.last) continue;
      if (seq > state.last + 1) out.push(gapFrame(room, state.last, seq));
      out.push(eventFrame(room, data));
      state.last = seq;
    }
    if (lastSeq !== null && lastSeq > state.last && answer.recovered === false) {
      out.push(gapFrame(room, state.last, lastSeq + 1));
      state.last = lastSeq;
    }
    state.filling = false;
    out.push(...this.drain(state));
    return { deliver: out, fill: this.gapAfterDrain(state) };
  }

  /** The fill failed: stop holding back on it; a new fill when frames are still held. @returns {Outcome} */
  fillFailed(room) {
    const state = this.rooms.get(room);
    if (!state) return { deliver: [], fill: null };
    state.filling = false;
    if (state.last === null) return { deliver: [], fill: null };
    const out = this.drain(state);
    return { deliver: out, fill: this.gapAfterDrain(state) };
  }

  /** @param {RoomState} state */
  drain(state) {
    const last = /** @type {number} */ (state.last);
    for (const seq of [...state.held.keys()]) if (seq <= last) state.held.delete(seq);
    const out = [];
    let next = state.held.get(/** @type {number} */ (state.last) + 1);
    while (next !== undefined) {
      state.held.delete(/** @type {number} */ (state.last) + 1);
      out.push(next);
      state.last = /** @type {number} */ (state.last) + 1;
      next = state.held.get(state.last + 1);
    }
    return out;
  }

  /** @param {RoomState} state */
  gapAfterDrain(state) {
    if (state.held.size && state.last !== null) {
      state.filling = true;
      return state.last;
    }
    return null;
  }

  /** Past `maxHeld` held frames, give up on the gap below the lowest one. @param {RoomState} state */
  bound(room, state) {
    if (state.held.size <= this.maxHeld || state.last === null) return [];
    const lowest = Math.min(...state.held.keys());
    /** @type {Frame[]} */
    const out = [gapFrame(room, state.last, lowest)];
    state.last = lowest - 1;
    out.push(...this.drain(state));
    return out;
  }
}

// ---- tokens and the HTTP API ---------------------------------------------------------------------

/**
 * @typedef {object} Tokens what login and refresh return (PROTOCOL.md section 6)
 * @property {string} accessToken
 * @property {string|null} refreshToken
 * @property {number} expiresAt epoch ms
 * @property {number} issuedAt epoch ms
 * @property {string|null} userId
 * @property {string|null} username
 */

/**
 * Tokens from a login/refresh answer `{access_token, refresh_token, expires_in, user_id, username}`.
 * @param {Record<string, any>} body @param {Tokens|null} [previous] @returns {Tokens}
 */
export function tokensFrom(body, previous = null) {
  const claims = jwtClaims(body.access_token);
  const now = Date.now();
  const expiresIn = Number(body.expires_in) > 0 ? Number(body.expires_in) * 1000 : null;
  const issuedAt = Number.isFinite(claims.iat) && claims.iat * 1000 <= now ? claims.iat * 1000 : now;
  const expiresAt = expiresIn ? now + expiresIn : Number.isFinite(claims.exp) ? claims.exp * 1000 : now + 900000;
  return {
    accessToken: String(body.access_token),
    refreshToken: typeof body.refresh_token === "string" ? body.refresh_token : previous ? previous.refreshToken : null,
    expiresAt,
    issuedAt,
    userId: body.user_id || claims.sub || (previous && previous.userId) || null,
    username: body.username || (previous && previous.username) || null,
  };
}

/** The text of an HTTP error body: natter's `{"detail","code"}` or FastAPI's 422 list. */
function detailOf(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail
      .map((d) => {
        const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
        return where ? `${where}: ${d.msg}` : String(d.msg);
      })
      .join("; ");
  }
  return `request failed (HTTP ${status})`;
}

/**
 * The HTTP API of a natter gateway (PROTOCOL.md section 6; the OpenAPI document at
 * `/openapi.json`). Holds the tokens; {@link NatterClient} uses it to refresh them.
 */
export class NatterHttp {
  /**
   * @param {object} [options]
   * @param {string} [options.baseUrl] `http://host:port` ("" = same origin, in a browser)
   * @param {Tokens|null} [options.tokens] tokens saved earlier
   * @param {(tokens: Tokens|null) => void} [options.onTokens] called whenever the tokens change
   *   (login, refresh, logout): persist them here
   * @param {typeof fetch} [options.fetch]
   */
  constructor({ baseUrl = "", tokens = null, onTokens = () => {}, fetch: fetchImpl } = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    /** @type {Tokens|null} */
    this.tokens = tokens;
    this.onTokens = onTokens;
    this.fetch = fetchImpl || globalThis.fetch.bind(globalThis);
    /** @type {Promise<Tokens>|null} the refresh in flight (one at a time: refresh tokens rotate) */
    this.refreshing = null;
  }

  /** @param {Tokens|null} tokens */
  setTokens(tokens) {
    this.tokens = tokens;
    try {
      this.onTokens(tokens);
    } catch (_err) {
      /* a persistence failure must not break the session */
    }
  }

  /**
   * One HTTP request. `json` is sent as JSON, `body` as is (FormData); `auth` adds the Bearer
   * token (refreshed first when it expires within 10 s).
   * @param {string} method @param {string} path
   * @param {{json?: any, body?: any, auth?: boolean, params?: Record<string, any>, raw?: boolean}} [options]
   * @returns {Promise<any>} the parsed JSON body (null for 204), or the Response with `raw`
   * @throws {HttpError} any status >= 400, or status 0 when the server cannot be reached
   */
  async call(method, path, { json, body, auth = false, params, raw = false } = {}) {
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json" };
    if (json !== undefined) headers["Content-Type"] = "application/json";
    if (auth) {
      if (this.tokens && this.tokens.refreshToken && this.tokens.expiresAt - Date.now() < HTTP_TOKEN_MARGIN_MS) {
        await this.refreshTokens({ staleAccess: this.tokens.accessToken }).catch(() => {});
      }
      if (!this.tokens) throw new AuthError("not logged in");
      headers.Authorization = `Bearer ${this.tokens.accessToken}`;
    }
    let url = `${this.baseUrl}${path}`;
    if (params) {
      const query = new URLSearchParams();
      for (const [key, value] of Object.entries(params)) if (value !== undefined && value !== null) query.set(key, String(value));
      const text = query.toString();
      if (text) url += `?${text}`;
    }
    let response;
    try {
      response = await this.fetch(url, {
        method,
        headers,
        body: json !== undefined ? JSON.stringify(json) : body,
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (_err) {
      throw new HttpError(0, "cannot reach the server");
    }
    if (raw && response.ok) return response;
    let data = null;
    if (response.status !== 204) {
      try {
        data = await response.json();
      } catch (_err) {
        data = null;
      }
    }
    if (!response.ok) {
      const retry = Number(response.headers.get("Retry-After"));
      throw new HttpError(response.status, detailOf(data, response.status), {
        code: data && typeof data.code === "string" ? data.code : null,
        retryAfter: Number.isFinite(retry) && retry > 0 ? retry : null,
        body: data,
      });
    }
    return data;
  }

  /** `POST /api/auth/register`: `{user_id, username}` (409 `conflict` when taken). */
  register(username, password) {
    return this.call("POST", "/api/auth/register", { json: { username, password } });
  }

  /** `POST /api/auth/login`: stores and returns the tokens (401; 429 with `retryAfter`). @returns {Promise<Tokens>} */
  async login(username, password) {
    const body = await this.call("POST", "/api/auth/login", { json: { username, password } });
    this.setTokens(tokensFrom(body));
    return /** @type {Tokens} */ (this.tokens);
  }

  /**
   * Refresh unless someone already did: when the stored access token is no longer
   * `staleAccess`, the stored tokens are returned without a request. One refresh at a time.
   * @param {{staleAccess?: string|null}} [options]
   * @returns {Promise<Tokens>}
   * @throws {AuthError} "refresh rejected" (401/403: the session is over) or no refresh token
   * @throws {HttpError} anything else (worth a retry later)
   */
  refreshTokens({ staleAccess = null } = {}) {
    const current = this.tokens;
    if (current && staleAccess && current.accessToken !== staleAccess) return Promise.resolve(current);
    if (this.refreshing) return this.refreshing;
    this.refreshing = (async () => {
      try {
        const used = this.tokens && this.tokens.refreshToken;
        if (!used) throw new AuthError("token expired", "no refresh token");
        let body;
        try {
          body = await this.call("POST", "/api/auth/refresh", { json: { refresh_token: used } });
        } catch (err) {
          if (err instanceof HttpError && (err.status === 401 || err.status === 403)) {
            throw new AuthError("refresh rejected", err.detail);
          }
          throw err;
        }
        if (!this.tokens || this.tokens.refreshToken !== used) throw new AuthError("logged out");
        this.setTokens(tokensFrom(body, this.tokens));
        return /** @type {Tokens} */ (this.tokens);
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /** `POST /api/auth/logout`: revoke this session (or `all`), forget the tokens. */
  async logout({ all = false } = {}) {
    const tokens = this.tokens;
    this.setTokens(null);
    if (tokens && tokens.refreshToken) {
      await this.call("POST", "/api/auth/logout", {
        json: { refresh_token: tokens.refreshToken, all },
      }).catch(() => {});
    }
  }

  /** `GET /api/me`: `{user_id, username, created_at, role}`. */
  me() {
    return this.call("GET", "/api/me", { auth: true });
  }

  /** `GET /api/rooms`: `{rooms: [{name, private, owner, last_seq, online}]}`. */
  rooms() {
    return this.call("GET", "/api/rooms", { auth: true });
  }

  /** `GET /api/me/rooms`: `{rooms: [{name, private, dm, peer, role, last_seq, read_seq, unread, last_message}]}`. */
  myRooms() {
    return this.call("GET", "/api/me/rooms", { auth: true });
  }

  /** `POST /api/rooms` (201; 409 when it exists). */
  createRoom(name, { private: isPrivate = false } = {}) {
    return this.call("POST", "/api/rooms", { json: { name, private: isPrivate }, auth: true });
  }

  /** `POST /api/rooms/{room}/members` (owner). */
  addMember(room, username) {
    return this.call("POST", `/api/rooms/${encodeURIComponent(room)}/members`, { json: { username }, auth: true });
  }

  /** `DELETE /api/rooms/{room}/members/{username}` (owner; or yourself). */
  removeMember(room, username) {
    return this.call("DELETE", `/api/rooms/${encodeURIComponent(room)}/members/${encodeURIComponent(username)}`, { auth: true });
  }

  /** `PUT /api/rooms/{room}/members/{username}` `{role}` (section 10). */
  setRole(room, username, role) {
    return this.call("PUT", `/api/rooms/${encodeURIComponent(room)}/members/${encodeURIComponent(username)}`, { json: { role }, auth: true });
  }

  /**
   * `POST /api/rooms/{room}/bans` (section 10).
   * @param {string} room @param {string} username
   * @param {{durationS?: number}} [options] seconds; absent: until lifted
   */
  ban(room, username, { durationS } = {}) {
    return this.call("POST", `/api/rooms/${encodeURIComponent(room)}/bans`, { json: compact({ username, duration_s: durationS }), auth: true });
  }

  /** `DELETE /api/rooms/{room}/bans/{username}`. */
  unban(room, username) {
    return this.call("DELETE", `/api/rooms/${encodeURIComponent(room)}/bans/${encodeURIComponent(username)}`, { auth: true });
  }

  /**
   * `POST /api/rooms/{room}/mutes` (section 10).
   * @param {string} room @param {string} username
   * @param {{durationS?: number}} [options] seconds; absent: until lifted
   */
  mute(room, username, { durationS } = {}) {
    return this.call("POST", `/api/rooms/${encodeURIComponent(room)}/mutes`, { json: compact({ username, duration_s: durationS }), auth: true });
  }

  /** `DELETE /api/rooms/{room}/mutes/{username}`. */
  unmute(room, username) {
    return this.call("DELETE", `/api/rooms/${encodeURIComponent(room)}/mutes/${encodeURIComponent(username)}`, { auth: true });
  }

  /** `POST /api/rooms/{room}/leave`: leave for good (409 for a DM or the owner of a private room). */
  leaveRoom(room) {
    return this.call("POST", `/api/rooms/${encodeURIComponent(room)}/leave`, { auth: true });
  }

  /** `POST /api/dms`: `{room, peer, created}`, the direct-message room with `username`. */
  openDm(username) {
    return this.call("POST", "/api/dms", { json: { username }, auth: true });
  }

  /**
   * `GET /api/rooms/{room}/messages`: a history page.
   * @param {string} room @param {{before?: number, limit?: number, thread?: number}} [options]
   */
  history(room, { before, limit, thread } = {}) {
    return this.call("GET", `/api/rooms/${encodeURIComponent(room)}/messages`, { params: { before, limit, thread }, auth: true });
  }

  /**
   * `POST /api/rooms/{room}/messages` (section 12): post as this user (or as a bot with a
   * service token). Idempotent on `clientMsgId`: a repeat answers the original `ack`.
   * @param {string} room @param {string} message
   * @param {{clientMsgId?: string, replyTo?: number}} [options]
   */
  postMessage(room, message, { clientMsgId = uuid(), replyTo } = {}) {
    return this.call("POST", `/api/rooms/${encodeURIComponent(room)}/messages`, {
      json: compact({ message, client_msg_id: clientMsgId, reply_to: replyTo }),
      auth: true,
    });
  }

  /**
   * `POST /api/rooms/{room}/attachments` (section 11): upload one file (a Blob or File).
   * @returns {Promise<{attachment_id: string, name: string, size: number, content_type: string, width: number|null, height: number|null}>}
   * @throws {HttpError} 413 too big, 415 type not allowed, 403 / 404
   */
  upload(room, file, name) {
    const form = new FormData();
    form.append("file", file, name || /** @type {any} */ (file).name || "file");
    return this.call("POST", `/api/rooms/${encodeURIComponent(room)}/attachments`, { body: form, auth: true });
  }

  /** `GET /api/attachments/{id}` (`thumb`: the JPEG thumbnail of an image). @returns {Promise<Blob>} */
  async download(attachmentId, { thumb = false } = {}) {
    const response = await this.call("GET", `/api/attachments/${encodeURIComponent(attachmentId)}`, {
      params: thumb ? { thumb: 1 } : undefined,
      auth: true,
      raw: true,
    });
    return response.blob();
  }

  /** `GET /api/notifications` (`unreadOnly`, `limit`). */
  notifications({ unreadOnly = false, limit = 50 } = {}) {
    return this.call("GET", "/api/notifications", { params: { unread_only: unreadOnly, limit }, auth: true });
  }
}

// ---- requests in flight --------------------------------------------------------------------------

/**
 * @typedef {object} Pending one request until it is answered, fails or passes its deadline
 * @property {Frame} frame
 * @property {string} kind
 * @property {(frame: Frame) => void} resolve
 * @property {(error: Error) => void} reject
 * @property {number} deadline epoch ms
 * @property {boolean} resend wait for the next socket when this one closes first
 * @property {boolean} early may go out before the socket is live (re-joins, token refresh)
 * @property {boolean} retry retry `rate_limited` / `unavailable`
 * @property {((frame: Frame) => void)|null} onAnswer
 * @property {Backoff} backoff
 * @property {string|null} wireId the `id` of its frame on the current socket
 * @property {any} timer a retry timer
 * @property {any} expiry the deadline timer
 * @property {RequestError|null} lastError
 * @property {boolean} done
 */

/**
 * The requests of one client across its sockets, correlated by `id` (PROTOCOL.md section 1):
 * each time a request goes on a socket it gets a fresh `id`. `rate_limited` is retried after
 * `retry_after` plus jitter, `unavailable` after a full-jitter backoff, until the deadline.
 */
class RequestTable {
  /** @param {{idPrefix: string, backoffBase: number, backoffCap: number, retryHook: (p: Pending, e: RequestError) => number|null}} options */
  constructor({ idPrefix, backoffBase, backoffCap, retryHook }) {
    this.idPrefix = idPrefix;
    this.backoffBase = backoffBase;
    this.backoffCap = backoffCap;
    this.retryHook = retryHook;
    /** @type {Set<Pending>} in creation order */
    this.pending = new Set();
    /** @type {Map<string, Pending>} */
    this.byWire = new Map();
    this.ids = 0;
    /** @type {((text: string) => void)|null} */
    this.write = null;
    this.live = false;
    /** @type {Set<string>} ids of unanswered frames (typing) */
    this.unanswered = new Set();
  }

  newId() {
    this.ids += 1;
    return `${this.idPrefix}${this.ids}`;
  }

  /** A new socket: only `early` requests go out until {@link goLive}. */
  attach(write) {
    this.write = write;
    this.live = false;
  }

  /** Send every waiting request, oldest first. */
  goLive() {
    this.live = true;
    for (const p of [...this.pending]) if (p.wireId === null && p.timer === null) this.dispatch(p);
  }

  /** The socket is gone: resend-able requests wait for the next one, the others fail. */
  detach() {
    this.write = null;
    this.live = false;
    this.byWire.clear();
    this.unanswered.clear();
    for (const p of [...this.pending]) {
      p.wireId = null;
      if (!p.resend) this.settle(p, null, new ConnectionLost("socket closed before the answer"));
    }
  }

  /** Fail every pending request with `error`. */
  failAll(error) {
    for (const p of [...this.pending]) this.settle(p, null, error);
  }

  /**
   * Send `frame` with a fresh `id` (now, or on the next live socket); resolves with the answer.
   * @param {Frame} frame
   * @param {{kind: string, timeout: number, onAnswer?: ((f: Frame) => void)|null, early?: boolean, resend?: boolean, retry?: boolean}} options
   * @returns {Promise<Frame>}
   */
  request(frame, { kind, timeout, onAnswer = null, early = false, resend = true, retry = true }) {
    if (!resend && this.write === null) return Promise.reject(new ConnectionLost("not connected"));
    return new Promise((resolve, reject) => {
      /** @type {Pending} */
      const p = {
        frame, kind, resolve, reject, deadline: Date.now() + timeout, resend, early, retry, onAnswer,
        backoff: new Backoff(this.backoffBase, this.backoffCap), wireId: null, timer: null, expiry: null,
        lastError: null, done: false,
      };
      this.pending.add(p);
      p.expiry = setTimeout(() => {
        p.expiry = null;
        this.settle(p, null, p.lastError || new RequestTimeout(`no answer to ${kind} within ${timeout} ms`));
      }, timeout);
      this.dispatch(p);
    });
  }

  /** A frame that gets no answer unless it fails (`typing`). False when no live socket. */
  sendUnanswered(frame) {
    if (!this.write || !this.live) return false;
    const id = this.newId();
    this.unanswered.add(id);
    if (this.unanswered.size > 256) this.unanswered.delete(this.unanswered.values().next().value);
    this.write(JSON.stringify({ ...frame, id }));
    return true;
  }

  /** Route a frame carrying an `id`; true when it answered one of ours. @param {Frame} frame */
  answer(frame) {
    const id = frame.id;
    if (typeof id !== "string") return false;
    const p = this.byWire.get(id);
    if (!p) return this.unanswered.delete(id) || id.startsWith(this.idPrefix);
    this.byWire.delete(id);
    p.wireId = null;
    if (p.done) return true;
    if (frame.type === "error") {
      this.onError(p, new RequestError(frame));
      return true;
    }
    if (p.onAnswer) {
      try {
        p.onAnswer(frame);
      } catch (err) {
        console.error("natter: handling the %s answer failed", p.kind, err);
      }
    }
    this.settle(p, frame, null);
    return true;
  }

  /** @param {Pending} p */
  dispatch(p) {
    if (p.done || !this.write || !(this.live || p.early)) return;
    const id = this.newId();
    p.wireId = id;
    this.byWire.set(id, p);
    this.write(JSON.stringify({ ...p.frame, id }));
  }

  /** @param {Pending} p @param {RequestError} error */
  onError(p, error) {
    let delay = null;
    if (p.retry) {
      if (error.code === "rate_limited") delay = Math.max(error.retryAfter || 0.05, 0.01) * 1000 + p.backoff.next();
      else if (error.code === "unavailable") delay = p.backoff.next();
      else delay = this.retryHook(p, error);
    }
    if (delay !== null && Date.now() + delay < p.deadline) {
      p.lastError = error;
      p.timer = setTimeout(() => {
        p.timer = null;
        this.dispatch(p);
      }, delay);
      return;
    }
    this.settle(p, null, error);
  }

  /** @param {Pending} p @param {Frame|null} answer @param {Error|null} error */
  settle(p, answer, error) {
    if (p.done) return;
    p.done = true;
    clearTimeout(p.timer);
    clearTimeout(p.expiry);
    p.timer = p.expiry = null;
    this.pending.delete(p);
    if (p.wireId !== null) this.byWire.delete(p.wireId);
    p.wireId = null;
    if (error) p.reject(error);
    else p.resolve(/** @type {Frame} */ (answer));
  }
}

// ---- the client ----------------------------------------------------------------------------------

/**
 * @typedef {"idle"|"connecting"|"online"|"offline"|"stopped"} ConnectionState
 * @typedef {{state: ConnectionState, url?: string|null, delay?: number, code?: number, reason?: string, error?: Error|null, attempt?: number}} StateEvent
 */

/**
 * A WebSocket client of natter (PROTOCOL.md), in browsers and Node.js 20+.
 *
 * Pushed frames (and the SDK's own `gap` and `joined` frames) are delivered to listeners:
 * `client.on("message", fn)`, `client.on("*", fn)` for every one, `client.on("state", fn)` for
 * {@link StateEvent}s; or iterated with `for await (const frame of client)`. Each room's room
 * events (`message`, `message_edited`, `message_deleted`, `reaction`, `member`) arrive once and
 * in `seq` order. Every `joined` answer, automatic re-joins after a reconnect included, is also
 * delivered as a `joined` frame, after the room events it carried.
 */
export class NatterClient {
  /**
   * @param {object} options
   * @param {string|string[]} options.urls gateway WebSocket URLs (`ws://host:8000/ws`), used one
   *   at a time; a failure moves to the next
   * @param {NatterHttp} [options.http] holds the tokens (default: one for the first URL's host)
   * @param {string} [options.token] a bare access token (no refresh possible)
   * @param {string} [options.username] with `password`: log in at {@link connect}
   * @param {string} [options.password]
   * @param {"first_message"|"query"} [options.auth] how the socket authenticates (section 2):
   *   `first_message` (default) keeps the token out of URLs and access logs
   * @param {number} [options.requestTimeout] ms a request may take, retries included (10000)
   * @param {number} [options.sendDeadline] ms a send/edit/delete/react keeps trying (30000)
   * @param {number} [options.openTimeout] ms for one socket to open and authenticate (10000)
   * @param {number} [options.backoffBase] ms, full-jitter reconnect backoff base (200)
   * @param {number} [options.backoffCap] ms, its cap (10000)
   * @param {number} [options.refreshLead] ms before expiry to refresh the token (60000)
   * @param {number} [options.refreshFraction] never before this fraction of its life (0.8)
   * @param {number|null} [options.pingInterval] ms between app-level pings that detect half-open
   *   sockets (25000; null: none)
   * @param {number} [options.pongTimeout] ms a ping may wait for its pong (10000)
   * @param {"first"|"random"} [options.pick] the first URL to try (random spreads many clients)
   * @param {any} [options.WebSocket] a WHATWG WebSocket constructor (default: the global one)
   */
  constructor({
    urls,
    http,
    token,
    username,
    password,
    auth = "first_message",
    requestTimeout = 10000,
    sendDeadline = 30000,
    openTimeout = 10000,
    backoffBase = 200,
    backoffCap = 10000,
    refreshLead = 60000,
    refreshFraction = 0.8,
    pingInterval = 25000,
    pongTimeout = 10000,
    pick = "first",
    WebSocket: WebSocketImpl,
  }) {
    this.urls = Array.isArray(urls) ? [...urls] : [urls];
    if (!this.urls.length) throw new RangeError("at least one gateway URL is needed");
    if (auth !== "first_message" && auth !== "query") throw new RangeError("auth must be first_message or query");
    this.authMethod = auth;
    this.requestTimeout = requestTimeout;
    this.sendDeadline = sendDeadline;
    this.openTimeout = openTimeout;
    this.backoffBase = backoffBase;
    this.backoffCap = backoffCap;
    this.refreshLead = refreshLead;
    this.refreshFraction = refreshFraction;
    this.pingInterval = pingInterval;
    this.pongTimeout = pongTimeout;
    this.WebSocket = WebSocketImpl || globalThis.WebSocket;
    if (!this.WebSocket) throw new NatterError("no WebSocket: on Node.js 20 run node --experimental-websocket, or pass {WebSocket}");
    this.http = http || new NatterHttp({ baseUrl: httpBaseOf(this.urls[0]) });
    if (token) this.http.setTokens(tokensFrom({ access_token: token }));
    this.credentials = username && password ? { username, password } : null;

    /** Identity from the last `auth_success`. */
    this.userId = "";
    this.username = "";
    /** @type {string|null} */
    this.sessionId = null;
    /** Expiry of the token the socket is authenticated with (epoch ms). */
    this.expiresAt = 0;
    /** @type {string|null} URL of the current socket */
    this.url = null;
    /** Successful authentications so far (1 + reconnects). */
    this.connections = 0;
    /** @type {ConnectionState} */
    this.state = "idle";

    this.urlIndex = pick === "random" ? Math.floor(Math.random() * this.urls.length) : 0;
    this.issuedAt = 0;
    /** @type {any} the current connection `{ws, url, token, live, closed, timers}` */
    this.conn = null;
    this.seq = new Sequencer();
    /** @type {Set<string>} rooms joined (re-joined after every reconnect until left) */
    this.joinedRooms = new Set();
    /** @type {Map<string, {promise: Promise<void>, conn: any, done: boolean}>} */
    this.fills = new Map();
    this.requests = new RequestTable({
      idPrefix: `${Math.random().toString(16).slice(2, 8)}-`,
      backoffBase,
      backoffCap,
      retryHook: (p, error) => this.retryNotJoined(p, error),
    });
    /** @type {Map<string, Set<(frame: any) => void>>} */
    this.listeners = new Map();
    /** @type {Frame[]} frames waiting for an async iterator */
    this.queue = [];
    /** @type {((v: IteratorResult<Frame>) => void)[]} */
    this.waiters = [];
    this.iterating = false;
    this.running = false;
    this.closed = false;
    /** @type {Error|null} why the client stopped */
    this.fatal = null;
    this.forceRefresh = false;
    /** @type {AbortController} aborted to cut a reconnect wait short */
    this.wake = new AbortController();
    /** @type {{resolve: () => void, reject: (e: Error) => void}[]} */
    this.liveWaiters = [];
  }

  // --- events ----------------------------------------------------------------------------------

  /**
   * Listen to pushed frames of `type` (`"message"`, `"notification"`, `"gap"`, `"joined"`,
   * ...), `"*"` for every pushed frame, or `"state"` for connection {@link StateEvent}s.
   * @param {string} type @param {(frame: any) => void} listener
   * @returns {() => void} call it to stop listening
   */
  on(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    /** @type {Set<any>} */ (this.listeners.get(type)).add(listener);
    return () => this.off(type, listener);
  }

  /** Stop listening. */
  off(type, listener) {
    const set = this.listeners.get(type);
    if (set) set.delete(listener);
  }

  /** @param {string} type @param {any} value */
  dispatch(type, value) {
    for (const listener of [...(this.listeners.get(type) || [])]) {
      try {
        listener(value);
      } catch (err) {
        console.error("natter: a %s listener failed", type, err);
      }
    }
  }

  /** Hand one pushed frame to the listeners and the iterator. @param {Frame} frame */
  emit(frame) {
    this.dispatch(frame.type, frame);
    this.dispatch("*", frame);
    if (!this.iterating) return;
    const waiter = this.waiters.shift();
    if (waiter) waiter({ value: frame, done: false });
    else this.queue.push(frame);
  }

  /** @param {Outcome} outcome */
  emitOutcome(room, outcome) {
    for (const frame of outcome.deliver) this.emit(frame);
    if (outcome.fill !== null) this.startFill(room);
  }

  /** @param {ConnectionState} state @param {Omit<StateEvent, "state">} [details] */
  setState(state, details = {}) {
    this.state = state;
    this.dispatch("state", { state, url: this.url, ...details });
  }

  /** Iterate pushed frames: `for await (const frame of client) {...}` (ends at {@link close}). */
  [Symbol.asyncIterator]() {
    this.iterating = true;
    return {
      next: () => {
        const frame = this.queue.shift();
        if (frame) return Promise.resolve({ value: frame, done: false });
        if (this.closed || this.fatal) {
          return this.fatal && !this.closed ? Promise.reject(this.fatal) : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve) => this.waiters.push(resolve));
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
  }

  // --- lifecycle -------------------------------------------------------------------------------

  /**
   * Start connecting; resolves once a socket is authenticated and its rooms are re-joined.
   * @param {{timeout?: number}} [options] ms (30000)
   * @returns {Promise<NatterClient>}
   * @throws {AuthError} the credentials or token were refused
   * @throws {RequestTimeout} not connected within `timeout` (the client keeps trying)
   * @throws {HttpError} the login failed
   */
  async connect({ timeout = 30000 } = {}) {
    this.checkUsable();
    if (!this.running) {
      if (!this.http.tokens) {
        if (!this.credentials) throw new AuthError("not logged in", "give http with tokens, a token, or username and password");
        await this.http.login(this.credentials.username, this.credentials.password);
      }
      this.running = true;
      this.run();
    }
    await this.waitConnected({ timeout });
    return this;
  }

  /**
   * Resolves with the URL once a socket is live.
   * @param {{timeout?: number}} [options] ms (no limit when absent)
   */
  waitConnected({ timeout } = {}) {
    this.checkUsable();
    if (this.conn && this.conn.live) return Promise.resolve(this.conn.url);
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => { clearTimeout(timer); resolve(this.url); },
        reject: (/** @type {Error} */ e) => { clearTimeout(timer); reject(e); },
      };
      const timer = timeout === undefined ? null : setTimeout(() => {
        this.liveWaiters = this.liveWaiters.filter((w) => w !== waiter);
        reject(new RequestTimeout(`not connected within ${timeout} ms`));
      }, timeout);
      this.liveWaiters.push(waiter);
    });
  }

  /** Whether a socket is authenticated and live right now. */
  get connected() {
    return Boolean(this.conn && this.conn.live);
  }

  /** Rooms joined (re-joined after every reconnect until {@link leave}). */
  get rooms() {
    return new Set(this.joinedRooms);
  }

  /** The last `seq` of `room` handed out (null: none yet). */
  lastSeq(room) {
    return this.seq.lastSeq(room);
  }

  /** Cut a reconnect wait short (e.g. on the browser's `online` event). */
  reconnectNow() {
    this.wake.abort();
  }

  /** Close the socket (1000), stop reconnecting, fail pending requests with {@link ClientClosed}. */
  close() {
    if (this.closed) return;
    this.closed = true;
    const conn = this.conn;
    if (conn) this.endConnection(conn, 1000, "client closed");
    this.wake.abort();
    this.requests.failAll(new ClientClosed("client closed"));
    for (const waiter of this.liveWaiters.splice(0)) waiter.reject(new ClientClosed("client closed"));
    for (const waiter of this.waiters.splice(0)) waiter({ value: undefined, done: true });
    this.setState("stopped", { error: null });
  }

  checkUsable() {
    if (this.fatal) throw this.fatal;
    if (this.closed) throw new ClientClosed("client closed");
  }

  /** End the session with `error` (an {@link AuthError}): listeners get state "stopped". */
  stop(error) {
    if (this.fatal || this.closed) return;
    this.fatal = error;
    this.requests.failAll(error);
    for (const waiter of this.liveWaiters.splice(0)) waiter.reject(error);
    for (const waiter of this.waiters.splice(0)) waiter({ value: undefined, done: true });
    this.setState("stopped", { error });
  }

  // --- requests --------------------------------------------------------------------------------

  /**
   * @param {Frame} frame
   * @param {{kind: string, timeout?: number, onAnswer?: ((f: Frame) => void)|null, early?: boolean, resend?: boolean, retry?: boolean}} options
   */
  request(frame, options) {
    this.checkUsable();
    if (!this.running) return Promise.reject(new NatterError("not connected: call connect() first"));
    return this.requests.request(frame, { ...options, timeout: options.timeout ?? this.requestTimeout });
  }

  /** `ping` -> the `pong` answer. */
  ping() {
    return this.request({ type: "ping" }, { kind: "ping" });
  }

  /**
   * Join `room`; resolves with the `joined` answer (`last_seq`, `online`, `messages`,
   * `recovered`). Its events are handed out as room event frames (those not seen yet): without
   * `since` the latest 50 (`replay: false`: none), with `since` every one after it. Joining a
   * room already joined re-synchronises it from the last `seq` seen.
   * @param {string} room @param {{since?: number|null, replay?: boolean, timeout?: number}} [options]
   * @throws {RequestError} `forbidden`, `invalid_room`, `room_not_found`, `banned` ...
   */
  async join(room, { since = null, replay = true, timeout } = {}) {
    this.checkUsable();
    const isNew = !this.seq.tracked(room);
    if (isNew) this.seq.track(room);
    else if (since === null) since = this.seq.lastSeq(room);
    try {
      return await this.request(frameOf("join", { room, since }), {
        kind: "join",
        timeout,
        onAnswer: (answer) => this.onJoined(room, answer, since, replay),
      });
    } catch (err) {
      if (isNew && !this.joinedRooms.has(room)) this.seq.forget(room);
      throw err;
    }
  }

  /**
   * Leave `room`: its frames stop at once; resolves with the `left` answer.
   * @param {string} room @param {{timeout?: number}} [options]
   */
  async leave(room, { timeout } = {}) {
    this.checkUsable();
    this.joinedRooms.delete(room);
    this.seq.forget(room);
    this.fills.delete(room);
    try {
      return await this.request({ type: "leave", room }, { kind: "leave", timeout });
    } catch (err) {
      if (err instanceof RequestError && err.code === "not_joined") return { type: "left", room };
      throw err;
    }
  }

  /**
   * Send a chat message; resolves with its `ack` (`seq`, `message_id`, `timestamp`). The
   * `clientMsgId` (default: a new UUID) is the idempotency key: every retry and every resend
   * after a reconnect uses it, so the message is stored once and the ack is the original one.
   * `unavailable` and `rate_limited` are retried until `deadline` ms (default `sendDeadline`).
   * @param {string} room @param {string} text 1..4000 characters
   * @param {{clientMsgId?: string, replyTo?: number|null, attachments?: string[], deadline?: number}} [options]
   */
  send(room, text, { clientMsgId = uuid(), replyTo = null, attachments, deadline } = {}) {
    const frame = frameOf("chat_message", {
      room, message: text, client_msg_id: clientMsgId, reply_to: replyTo,
      attachments: attachments && attachments.length ? attachments : null,
    });
    return this.request(frame, { kind: "send", timeout: deadline ?? this.sendDeadline });
  }

  /**
   * Edit your message `target` (v2); the ack has `seq: null` when nothing changed.
   * @param {string} room @param {number} target @param {string} text
   * @param {{clientMsgId?: string, deadline?: number}} [options]
   */
  edit(room, target, text, { clientMsgId = uuid(), deadline } = {}) {
    const frame = frameOf("edit", { room, target, message: text, client_msg_id: clientMsgId });
    return this.request(frame, { kind: "send", timeout: deadline ?? this.sendDeadline });
  }

  /**
   * Delete message `target` for good (v2: the author, a moderator or the owner).
   * @param {string} room @param {number} target @param {{clientMsgId?: string, deadline?: number}} [options]
   */
  delete(room, target, { clientMsgId = uuid(), deadline } = {}) {
    const frame = frameOf("delete", { room, target, client_msg_id: clientMsgId });
    return this.request(frame, { kind: "send", timeout: deadline ?? this.sendDeadline });
  }

  /**
   * Add (or `remove`) your `emoji` on message `target` (v2).
   * @param {string} room @param {number} target @param {string} emoji
   * @param {{remove?: boolean, clientMsgId?: string, deadline?: number}} [options]
   */
  react(room, target, emoji, { remove = false, clientMsgId = uuid(), deadline } = {}) {
    const frame = frameOf("react", { room, target, emoji, op: remove ? "remove" : "add", client_msg_id: clientMsgId });
    return this.request(frame, { kind: "send", timeout: deadline ?? this.sendDeadline });
  }

  /**
   * Set your read marker in `room` to `seq` (v2; it never moves back): the `read_marker` answer.
   * @param {string} room @param {number} seq @param {{timeout?: number}} [options]
   */
  read(room, seq, { timeout } = {}) {
    return this.request({ type: "read", room, seq }, { kind: "read", timeout });
  }

  /**
   * A history page `{type:"history", room, messages, has_more}`: up to `limit` (1..100) events
   * with `seq < before` (or the latest), oldest first, in their current state; `thread`: the
   * replies to that message. Not handed to listeners.
   * @param {string} room @param {{before?: number, limit?: number, thread?: number, timeout?: number}} [options]
   */
  history(room, { before, limit = 50, thread, timeout } = {}) {
    return this.request(frameOf("history", { room, before, limit, thread }), { kind: "history", timeout });
  }

  /**
   * `{type:"presence", room, online:[{user_id, username}]}`.
   * @param {string} room @param {{timeout?: number}} [options]
   */
  presence(room, { timeout } = {}) {
    return this.request({ type: "presence", room }, { kind: "presence", timeout });
  }

  /** Tell the room this user is typing; dropped while disconnected (no answer, no queue). */
  typing(room) {
    this.checkUsable();
    return this.requests.sendUnanswered({ type: "typing", room });
  }

  /**
   * `{type:"notifications", unread, items}`: the latest `limit` (1..500).
   * @param {{unreadOnly?: boolean, limit?: number, timeout?: number}} [options]
   */
  notifications({ unreadOnly = false, limit = 50, timeout } = {}) {
    return this.request({ type: "notifications", unread_only: unreadOnly, limit }, { kind: "notifications", timeout });
  }

  /**
   * Mark notifications `ids` (or `all`) read; resolves with the new summary.
   * @param {{ids?: string[], all?: boolean, timeout?: number}} [options]
   */
  markRead({ ids = [], all = false, timeout } = {}) {
    const frame = all ? { type: "mark_read", all: true } : { type: "mark_read", ids: [...ids] };
    return this.request(frame, { kind: "mark_read", timeout });
  }

  /** `not_joined` on a send to a joined room: the server lost the membership; re-join, retry. */
  retryNotJoined(p, error) {
    const room = p.frame.room;
    if (error.code !== "not_joined" || p.kind !== "send" || !this.joinedRooms.has(room)) return null;
    this.startFill(room);
    return p.backoff.next() + 50;
  }

  // --- joins and fills -------------------------------------------------------------------------

  /** A `joined` answer: runs before any later frame is handled. */
  onJoined(room, answer, since, replay) {
    if (!this.seq.tracked(room)) return;
    this.joinedRooms.add(room);
    this.emitOutcome(room, this.seq.joined(room, answer, since, replay));
    const { id: _id, ...joined } = answer;
    this.emit(joined);
  }

  /** Re-join `room` with `since` = last seq (gap, reconnect, lost membership); one at a time. */
  startFill(room) {
    const conn = this.conn;
    if (!conn || this.closed) return null;
    const running = this.fills.get(room);
    if (running && !running.done && running.conn === conn) return running.promise;
    this.seq.beginFill(room);
    const entry = { promise: Promise.resolve(), conn, done: false };
    entry.promise = this.fill(room, conn).finally(() => { entry.done = true; });
    this.fills.set(room, entry);
    return entry.promise;
  }

  async fill(room, conn) {
    const backoff = new Backoff(this.backoffBase, this.backoffCap);
    while (this.conn === conn && this.seq.tracked(room)) {
      const since = this.seq.lastSeq(room);
      let answered = false;
      try {
        await this.requests.request(frameOf("join", { room, since }), {
          kind: "join",
          timeout: this.requestTimeout,
          early: true,
          resend: false,
          onAnswer: (answer) => this.onJoined(room, answer, since, true),
        });
        answered = true;
      } catch (err) {
        if (err instanceof ConnectionLost || err instanceof ClientClosed || err instanceof AuthError) return;
        if (err instanceof RequestError && ROOM_GONE_CODES.has(err.code)) {
          this.roomGone(room, err);
          return;
        }
      }
      if (answered) {
        const state = this.seq.rooms.get(room);
        if (!state || !state.filling) return;
        continue; // frames are still held past a newer gap
      }
      await sleep(backoff.next());
    }
  }

  /** A joined room can no longer be joined (removed from a private room, banned). */
  roomGone(room, error) {
    this.joinedRooms.delete(room);
    this.seq.forget(room);
    const { id: _id, ...frame } = error.frame;
    this.emit({ ...frame, room });
  }

  // --- the connection loop ---------------------------------------------------------------------

  async run() {
    const backoff = new Backoff(this.backoffBase, this.backoffCap);
    let expiredInARow = 0;
    while (!this.closed && !this.fatal) {
      const url = this.urls[this.urlIndex];
      this.setState("connecting", { attempt: backoff.attempt });
      let conn;
      try {
        await this.ensureToken();
        conn = await this.open(url);
      } catch (err) {
        if (this.closed) return;
        if (err instanceof AuthError) {
          this.stop(err);
          return;
        }
        if (err && err.tokenExpired) {
          expiredInARow += 1;
          if (expiredInARow > 3) {
            this.stop(new AuthError("token expired", "refreshed tokens keep expiring"));
            return;
          }
          this.forceRefresh = true;
          continue;
        }
        const delay = backoff.next();
        this.setState("offline", { delay, error: err, attempt: backoff.attempt });
        this.rotate();
        await this.pause(delay);
        continue;
      }
      expiredInARow = 0;
      const started = Date.now();
      const [code, reason] = await this.serve(conn);
      if (this.closed || this.fatal) return;
      if (Date.now() - started >= STABLE_AFTER_MS) backoff.reset();
      if (code === 1008 && FATAL_CLOSE_REASONS.has(reason)) {
        this.stop(new AuthError(reason));
        return;
      }
      this.forceRefresh = code === 1008 && reason === "token expired";
      const delay = backoff.next();
      this.setState("offline", { delay, code, reason, attempt: backoff.attempt });
      this.rotate();
      await this.pause(delay);
    }
  }

  /** Wait `ms`, or less when {@link reconnectNow} / {@link close} is called. */
  async pause(ms) {
    if (this.wake.signal.aborted) this.wake = new AbortController();
    await sleep(ms, this.wake.signal);
    if (this.wake.signal.aborted) this.wake = new AbortController();
  }

  rotate() {
    this.urlIndex = (this.urlIndex + 1) % this.urls.length;
  }

  /** Refresh before connecting when the token is (nearly) expired or was refused as such. */
  async ensureToken() {
    const tokens = this.http.tokens;
    if (!tokens) throw new AuthError("not logged in");
    const soon = tokens.expiresAt - Date.now() <= MIN_TOKEN_VALIDITY_MS;
    if (!this.forceRefresh && !soon) return;
    if (!tokens.refreshToken) {
      if (this.forceRefresh || tokens.expiresAt <= Date.now()) throw new AuthError("token expired", "no refresh token");
      return;
    }
    await this.http.refreshTokens({ staleAccess: tokens.accessToken }); // AuthError stops; HttpError retries
    this.forceRefresh = false;
  }

  /**
   * Open and authenticate one socket: resolves with the connection once `auth_success` came.
   * Rejects with an {@link AuthError} (refused), an error with `tokenExpired` (refresh first),
   * or any other error (retry with backoff).
   */
  open(url) {
    const tokens = /** @type {Tokens} */ (this.http.tokens);
    const target = this.authMethod === "query" ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(tokens.accessToken)}` : url;
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this.WebSocket(target);
      } catch (err) {
        reject(err);
        return;
      }
      /** @type {any} */
      const conn = {
        ws, url, token: tokens.accessToken, live: false, ended: false, serving: false, pingTimer: null, refreshTimer: null,
        /** @type {any[]} frames that came after auth_success, before serve() took the socket */ early: [],
        /** @type {(v: [number, string]) => void} */ finish: () => {},
        /** @type {Promise<[number, string]>|null} */ closed: null,
      };
      conn.closed = new Promise((done) => { conn.finish = done; });
      let settled = false;
      const fail = (/** @type {any} */ err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        try { ws.close(); } catch (_err) { /* already closed */ }
        reject(err);
      };
      const timer = setTimeout(() => fail(new NatterError(`no auth_success within ${this.openTimeout} ms`)), this.openTimeout);
      ws.onopen = () => {
        if (this.authMethod === "first_message") {
          ws.send(JSON.stringify({ type: "auth", token: tokens.accessToken, id: this.requests.newId() }));
        }
      };
      ws.onmessage = (/** @type {MessageEvent} */ event) => {
        if (settled) {
          if (conn.serving) this.onRaw(conn, event.data);
          else conn.early.push(event.data);
          return;
        }
        const frame = parseFrame(event.data);
        if (!frame) return;
        if (frame.type === "auth_success") {
          settled = true;
          clearTimeout(timer);
          this.applyHello(frame, tokens.accessToken);
          resolve(conn);
        } else if (frame.type === "error") {
          const code = String(frame.code);
          const message = String(frame.message || "");
          if (code === "auth_failed" || code === "token_expired") {
            if (code === "token_expired" || /expired/i.test(message)) fail(Object.assign(new NatterError(message), { tokenExpired: true }));
            else if (/revoked/i.test(message)) fail(new AuthError("session revoked", message));
            else fail(new AuthError("auth failed", message));
          } else {
            fail(new NatterError(`${code}: ${message}`)); // unavailable, rate_limited ...: retry
          }
        }
      };
      ws.onerror = () => { /* a close event follows */ };
      ws.onclose = (/** @type {CloseEvent} */ event) => {
        if (!settled) fail(new NatterError(`socket closed ${event.code} ${event.reason || ""}`.trim()));
        else this.endConnection(conn, event.code || 1006, event.reason || "");
      };
    });
  }

  /** Run one authenticated socket until it closes: resolves with `[code, reason]`. */
  async serve(conn) {
    if (conn.ended) return conn.closed; // closed between auth_success and now
    this.connections += 1;
    this.url = conn.url;
    this.conn = conn;
    this.requests.attach((/** @type {string} */ text) => {
      if (!conn.ended && conn.ws.readyState === 1) conn.ws.send(text);
    });
    conn.serving = true;
    for (const data of conn.early.splice(0)) this.onRaw(conn, data);
    this.scheduleRefresh(conn);
    if (this.pingInterval) {
      conn.pingTimer = setInterval(() => this.pingOnce(conn), this.pingInterval);
    }
    this.resync(conn);
    return conn.closed;
  }

  /** Re-join every joined room with `since`, then send every waiting request in order. */
  async resync(conn) {
    const fills = [...this.joinedRooms].map((room) => this.startFill(room)).filter(Boolean);
    if (fills.length) await Promise.race([Promise.allSettled(fills), sleep(this.requestTimeout)]);
    if (this.conn !== conn || conn.ended) return;
    conn.live = true;
    this.requests.goLive();
    this.setState("online", { attempt: 0 });
    for (const waiter of this.liveWaiters.splice(0)) waiter.resolve();
  }

  /** The socket ended (closed by either side, or declared dead): clean up once. */
  endConnection(conn, code, reason) {
    if (conn.ended) return;
    conn.ended = true;
    conn.live = false;
    clearInterval(conn.pingTimer);
    clearTimeout(conn.refreshTimer);
    if (this.conn === conn) {
      this.conn = null;
      this.url = null;
      this.requests.detach();
    }
    conn.ws.onmessage = conn.ws.onclose = conn.ws.onopen = null;
    try {
      if (conn.ws.readyState <= 1) conn.ws.close(code === 1000 ? 1000 : undefined);
    } catch (_err) {
      /* closing a socket that is already gone */
    }
    conn.finish([code, reason]);
  }

  /** An app-level ping; no pong within `pongTimeout`: the socket is dead (half-open). */
  pingOnce(conn) {
    if (this.conn !== conn || !conn.live) return;
    this.requests
      .request({ type: "ping" }, { kind: "ping", timeout: this.pongTimeout, early: true, resend: false, retry: false })
      .catch((err) => {
        if (err instanceof RequestTimeout) this.endConnection(conn, 1006, "ping timeout");
      });
  }

  /** One raw server frame on a live connection. */
  onRaw(conn, data) {
    if (this.conn !== conn) return;
    const frame = parseFrame(data);
    if (frame) {
      try {
        this.onFrame(frame);
      } catch (err) {
        console.error("natter: handling a %s frame failed", frame.type, err);
      }
    }
  }

  /** Route one server frame: an answer, a room event, or another pushed frame. @param {Frame} frame */
  onFrame(frame) {
    if (frame.id !== undefined && frame.id !== null) {
      this.requests.answer(frame);
      return;
    }
    if (ROOM_EVENT_TYPES.has(frame.type)) {
      if (typeof frame.room === "string") this.emitOutcome(frame.room, this.seq.push(frame));
      return;
    }
    if (frame.type === "auth_success") {
      this.applyHello(frame, null);
      return;
    }
    if (frame.type === "removed" && typeof frame.room === "string") {
      this.joinedRooms.delete(frame.room);
      this.seq.forget(frame.room);
    }
    if (frame.type === "error" && (frame.code === "token_expired" || frame.code === "auth_failed")) return; // the close follows
    this.emit(frame);
  }

  // --- tokens ----------------------------------------------------------------------------------

  /** Identity and expiry from an `auth_success` (and the token's `iat`). */
  applyHello(hello, token) {
    this.userId = String(hello.user_id || this.userId);
    this.username = String(hello.username || this.username);
    this.sessionId = typeof hello.session_id === "string" ? hello.session_id : null;
    if (typeof hello.expires_at === "number") this.expiresAt = hello.expires_at * 1000;
    if (token) {
      const iat = jwtClaims(token).iat;
      const now = Date.now();
      this.issuedAt = Number.isFinite(iat) && iat * 1000 <= now ? iat * 1000 : now;
    }
  }

  /** Refresh the token before it expires and present it on this socket (`auth`, section 2). */
  scheduleRefresh(conn, retryMs = 0) {
    clearTimeout(conn.refreshTimer);
    if (this.expiresAt <= 0 || conn.ended) return;
    const when = retryMs || Math.max(0, refreshAt({
      issuedAt: this.issuedAt, expiresAt: this.expiresAt, leadMs: this.refreshLead, fraction: this.refreshFraction,
    }) - Date.now());
    conn.refreshTimer = setTimeout(() => this.refreshOnce(conn), Math.min(when, 2 ** 31 - 1));
  }

  async refreshOnce(conn, backoff = new Backoff(Math.max(this.backoffBase, 500), this.backoffCap)) {
    if (this.conn !== conn) return;
    const tokens = this.http.tokens;
    if (!tokens || !tokens.refreshToken) return; // the socket ends when the token expires
    let fresh;
    try {
      fresh = await this.http.refreshTokens({ staleAccess: conn.token });
    } catch (err) {
      if (err instanceof AuthError) {
        this.stop(err);
        if (this.conn === conn) this.endConnection(conn, 1000, "session ended");
        return;
      }
      this.scheduleRefresh(conn, backoff.next());
      return;
    }
    try {
      const answer = await this.requests.request({ type: "auth", token: fresh.accessToken }, {
        kind: "auth", timeout: this.requestTimeout, early: true, resend: false,
      });
      conn.token = fresh.accessToken;
      this.applyHello(answer, fresh.accessToken);
      this.scheduleRefresh(conn);
    } catch (err) {
      if (err instanceof ConnectionLost || err instanceof ClientClosed || err instanceof AuthError) return;
      this.scheduleRefresh(conn, backoff.next());
    }
  }

  /** Refresh the token now and present it on the live socket (e.g. after the machine slept). */
  async refreshNow() {
    const conn = this.conn;
    if (conn) await this.refreshOnce(conn);
    else await this.http.refreshTokens({ staleAccess: this.http.tokens && this.http.tokens.accessToken });
  }
}

/** A server frame from a WebSocket message (text only), or null. @returns {Frame|null} */
function parseFrame(data) {
  if (typeof data !== "string") return null;
  try {
    const frame = JSON.parse(data);
    return frame && typeof frame === "object" && typeof frame.type === "string" ? frame : null;
  } catch (_err) {
    return null;
  }
}
