// Drives a running chatd with the official socket.io-client, one scenario per run:
//   CHATD_URL=http://127.0.0.1:PORT CHATD_SECRET=... node driver.mjs <scenario>
// Exits 0 and prints a JSON line (the scenario's result) on success; exits 1 with the
// failed assertion otherwise. Invoked by tests/socketio.rs.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { io } from "socket.io-client";

const URL = process.env.CHATD_URL;
const SECRET = process.env.CHATD_SECRET;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** A JWT for `sub`, HS256 with the server's secret unless told otherwise. */
function token(sub, { exp = Math.floor(Date.now() / 1000) + 3600, alg = "HS256" } = {}) {
  const unsigned = `${b64({ alg, typ: "JWT" })}.${b64({ sub, exp })}`;
  if (alg === "none") return `${unsigned}.`;
  const hash = { HS256: "sha256", HS384: "sha384" }[alg];
  return `${unsigned}.${createHmac(hash, SECRET).update(unsigned).digest("base64url")}`;
}

/** A REST call as `user`; returns {status, body}. */
async function api(user, method, path, body) {
  const res = await fetch(URL + path, {
    method,
    headers: { authorization: `Bearer ${token(user)}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function group(owner, members, name = "test group") {
  const res = await api(owner, "POST", "/api/conversations", { type: "group", members, name });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

/** A socket.io-client connection that records every event it receives. */
class Client {
  constructor(user, options = {}) {
    this.user = user;
    this.events = [];
    this.waiters = new Set();
    this.socket = io(URL, {
      auth: { token: token(user) },
      transports: ["websocket"],
      reconnection: false,
      forceNew: true,
      ...options,
    });
    this.socket.onAny((event, data) => {
      this.events.push({ event, data });
      for (const waiter of [...this.waiters]) waiter();
    });
  }

  /** The first unconsumed `event` whose payload satisfies `pred`, waiting up to `ms`. */
  next(event, pred = () => true, ms = 5000) {
    return new Promise((resolve, reject) => {
      const take = () => {
        const i = this.events.findIndex((e) => e.event === event && pred(e.data));
        if (i < 0) return false;
        const [found] = this.events.splice(i, 1);
        cleanup();
        resolve(found.data);
        return true;
      };
      const timer = setTimeout(() => {
        cleanup();
        const seen = this.events.map((e) => e.event).join(", ");
        reject(new Error(`${this.user}: no ${event} within ${ms} ms (unconsumed: ${seen})`));
      }, ms);
      const waiter = () => take();
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      this.waiters.add(waiter);
      take();
    });
  }

  /** Asserts no unconsumed `event` arrives within `ms`. */
  async none(event, ms = 300) {
    await sleep(ms);
    const found = this.events.filter((e) => e.event === event);
    assert.equal(found.length, 0, `${this.user} got unexpected ${event}: ${JSON.stringify(found)}`);
  }

  ack(event, data) {
    return this.socket.timeout(5000).emitWithAck(event, data);
  }

  close() {
    this.socket.disconnect();
  }
}

/** A plain WebSocket (/ws, JSON frames) client with the same interface as `Client`. */
class WsClient {
  constructor(user) {
    this.user = user;
    this.events = [];
    this.waiters = new Set();
    this.acks = new Map();
    this.nextId = 1;
    this.socket = new WebSocket(`${URL.replace(/^http/, "ws")}/ws?token=${token(user)}`);
    this.socket.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.id !== undefined) {
        this.acks.get(frame.id)?.(frame.ack);
        this.acks.delete(frame.id);
        return;
      }
      this.events.push({ event: frame.event, data: frame.data });
      for (const waiter of [...this.waiters]) waiter();
    };
  }

  next(event, pred, ms) {
    return Client.prototype.next.call(this, event, pred, ms);
  }

  async ack(event, data) {
    const id = this.nextId++;
    const answer = new Promise((resolve) => this.acks.set(id, resolve));
    this.socket.send(JSON.stringify({ id, event, data }));
    const ack = await answer;
    assert.equal(ack.ok, true, `${event}: ${JSON.stringify(ack)}`);
    return ack;
  }

  close() {
    this.socket.close();
  }
}

/** Connects and waits for `ready`; returns the client with `.ready` set. */
async function connect(user, options) {
  const client = new Client(user, options);
  client.ready = await client.next("ready");
  return client;
}

/** Tries to connect with `options`; returns the connect_error. */
function connectError(options) {
  return new Promise((resolve, reject) => {
    const socket = io(URL, { transports: ["websocket"], reconnection: false, forceNew: true, ...options });
    socket.on("connect", () => {
      socket.disconnect();
      reject(new Error("connected, expected a refusal"));
    });
    socket.on("connect_error", (err) => {
      socket.disconnect();
      resolve(err);
    });
  });
}

/** An admin API call with the key in CHATD_ADMIN_KEY; returns the status. */
async function adminCall(method, path) {
  const headers = { authorization: `Bearer ${process.env.CHATD_ADMIN_KEY}` };
  return (await fetch(URL + path, { method, headers })).status;
}

/** Resolves with the reason of the socket's next disconnect. */
function disconnected(client) {
  return new Promise((resolve) => client.socket.once("disconnect", resolve));
}

const scenarios = {
  async token_expiry() {
    const soon = () => token("alice", { exp: Math.floor(Date.now() / 1000) + 2 });
    const expiring = await connect("alice", { auth: { token: soon() } });
    const refreshed = await connect("alice", { auth: { token: soon() } });
    const disconnected = new Promise((resolve) => expiring.socket.on("disconnect", resolve));
    const otherUser = await refreshed.ack("auth:refresh", { token: token("bob") });
    assert.equal(otherUser.error?.code, "forbidden", JSON.stringify(otherUser));
    const ack = await refreshed.ack("auth:refresh", { token: token("alice") });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    const expired = await expiring.next("auth:expired", () => true, 6000);
    assert.equal(expired.code, "token_expired");
    assert.equal(await disconnected, "io server disconnect");
    await sleep(1000);
    assert.equal(refreshed.socket.connected, true, "the refreshed socket outlives the first exp");
    assert.equal((await refreshed.ack("presence:query", { user_ids: [] })).ok, true);
    refreshed.close();
  },

  /** An operator disconnects a user, then bans them: their sockets are cut by the server and
   * a banned handshake gets connect_error `forbidden`; unbanned, they connect again. */
  async admin_disconnect_and_ban() {
    const first = await connect("mallory");
    const cut = disconnected(first);
    assert.equal(await adminCall("POST", "/api/admin/users/mallory/disconnect"), 204);
    assert.equal(await cut, "io server disconnect");
    (await connect("mallory")).close();

    const second = await connect("mallory");
    const banned = disconnected(second);
    assert.equal(await adminCall("PUT", "/api/admin/users/mallory/ban"), 204);
    assert.equal(await banned, "io server disconnect");
    const refused = await connectError({ auth: { token: token("mallory") } });
    assert.equal(refused.message, "forbidden");

    assert.equal(await adminCall("DELETE", "/api/admin/users/mallory/ban"), 204);
    (await connect("mallory")).close();
  },

  async cross_transport() {
    const conv = await group("alice", ["bob"]);
    const alice = await connect("alice");
    const bob = new WsClient("bob");
    bob.ready = await bob.next("ready");
    assert.deepEqual(bob.ready.conversations.map((c) => c.id), [conv.id]);
    await alice.next("user:online", (p) => p.user_id === "bob");
    await alice.ack("conversation:focus", { conversation_id: conv.id });

    const fromSocketIo = await alice.ack("message:send", { conversation_id: conv.id, content: "from socket.io" });
    assert.deepEqual(await bob.next("message:new"), fromSocketIo.message);
    assert.equal((await bob.next("notification")).message_id, fromSocketIo.message.id);

    await bob.ack("typing:start", { conversation_id: conv.id });
    assert.deepEqual(await alice.next("typing:start"), { conversation_id: conv.id, user_id: "bob" });
    const fromWs = await bob.ack("message:send", { conversation_id: conv.id, content: "from plain ws", client_id: "w-1" });
    assert.deepEqual(await alice.next("message:new"), fromWs.message);
    // Alice is looking at the conversation: her marker advances and Bob sees the receipt.
    assert.deepEqual(await bob.next("message:read"), { conversation_id: conv.id, user_id: "alice", seq: 2 });

    await bob.ack("message:read", { conversation_id: conv.id, seq: 2 });
    assert.deepEqual(await alice.next("message:read"), { conversation_id: conv.id, user_id: "bob", seq: 2 });
    const edited = await alice.ack("message:edit", { message_id: fromSocketIo.message.id, content: "edited" });
    assert.deepEqual(await bob.next("message:updated"), edited.message);
    const deleted = await bob.ack("message:delete", { message_id: fromWs.message.id });
    assert.deepEqual(await alice.next("message:deleted"), deleted.message);

    bob.close();
    const offline = await alice.next("user:offline", (p) => p.user_id === "bob");
    assert.ok(offline.last_seen_at);
    alice.close();
    return { seqs: [fromSocketIo.message.seq, fromWs.message.seq] };
  },

  async auth() {
    const alice = await connect("alice");
    assert.equal(alice.ready.user_id, "alice");
    assert.deepEqual(alice.ready.conversations, []);
    alice.close();
    const now = Math.floor(Date.now() / 1000);
    const refusals = [
      [{}, "unauthorized"],
      [{ auth: { token: "garbage" } }, "unauthorized"],
      [{ auth: { token: token("alice", { exp: now - 3600 }) } }, "token_expired"],
      [{ auth: { token: token("alice", { alg: "none" }) } }, "unauthorized"],
      [{ auth: { token: token("alice", { alg: "HS384" }) } }, "unauthorized"],
    ];
    for (const [options, code] of refusals) {
      const err = await connectError(options);
      assert.equal(err.message, code, JSON.stringify(options));
    }
    const viaQuery = await connect("bob", { auth: {}, query: { token: token("bob") } });
    assert.equal(viaQuery.ready.user_id, "bob");
    viaQuery.close();
    const viaHeader = await connect("carol", {
      auth: {},
      extraHeaders: { authorization: `Bearer ${token("carol")}` },
    });
    assert.equal(viaHeader.ready.user_id, "carol");
    viaHeader.close();
  },

  async send_fanout() {
    const conv = await group("alice", ["bob"]);
    const [tab1, tab2, bob] = await Promise.all([connect("alice"), connect("alice"), connect("bob")]);
    assert.deepEqual(bob.ready.conversations, [{ id: conv.id, last_seq: 0, last_revision: 0 }]);
    const ack = await tab1.ack("message:send", { conversation_id: conv.id, content: "hello", client_id: "c-1" });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.equal(ack.message.seq, 1);
    // The ack came after the commit: the message is already readable.
    const history = await api("bob", "GET", `/api/conversations/${conv.id}/messages`);
    assert.deepEqual(history.body.messages, [ack.message]);
    assert.deepEqual(await bob.next("message:new"), ack.message);
    assert.deepEqual(await tab2.next("message:new"), ack.message);
    await tab1.none("message:new");
    // A retry with the same client_id returns the original and delivers nothing new.
    const retry = await tab1.ack("message:send", { conversation_id: conv.id, content: "hello", client_id: "c-1" });
    assert.deepEqual(retry, ack);
    await bob.none("message:new");
    // REST sends fan out the same way (no sending socket to leave out).
    const rest = await api("alice", "POST", `/api/conversations/${conv.id}/messages`, { content: "via rest" });
    assert.equal(rest.status, 201);
    assert.deepEqual(await bob.next("message:new"), rest.body);
    assert.deepEqual(await tab1.next("message:new"), rest.body);
    for (const c of [tab1, tab2, bob]) c.close();
  },

  async edit_delete() {
    const conv = await group("alice", ["bob"]);
    const [alice, bob] = await Promise.all([connect("alice"), connect("bob")]);
    const sent = await alice.ack("message:send", { conversation_id: conv.id, content: "first draft" });
    await bob.next("message:new");
    const edited = await alice.ack("message:edit", { message_id: sent.message.id, content: "final" });
    assert.equal(edited.ok, true);
    assert.equal(edited.message.content, "final");
    const updated = await bob.next("message:updated");
    assert.equal(updated.content, "final");
    assert.ok(updated.edited_at);
    const refused = await bob.ack("message:edit", { message_id: sent.message.id, content: "mine now" });
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, "forbidden");
    const deleted = await alice.ack("message:delete", { message_id: sent.message.id });
    assert.equal(deleted.ok, true);
    const gone = await bob.next("message:deleted");
    assert.equal(gone.content, null);
    assert.equal(gone.seq, 1);
    assert.ok(gone.deleted_at);
    // Deleting again answers with the deleted message and announces nothing new.
    const again = await alice.ack("message:delete", { message_id: sent.message.id });
    assert.equal(again.ok, true);
    await bob.none("message:deleted");
    await alice.none("message:updated", 50);
    alice.close();
    bob.close();
  },

  async read_only() {
    const conv = await group("alice", ["bob"]);
    const bob = await connect("bob");
    const sent = await bob.ack("message:send", { conversation_id: conv.id, content: "before" });
    assert.equal(sent.ok, true);
    const closed = await api("alice", "PATCH", `/api/conversations/${conv.id}`, { status: "archived" });
    assert.equal(closed.status, 200, JSON.stringify(closed.body));
    const updated = await bob.next("conversation:updated");
    assert.equal(updated.status, "archived");
    const refused = await bob.ack("message:send", { conversation_id: conv.id, content: "after" });
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, "forbidden");
    const react = await bob.ack("message:react", { message_id: sent.message.id, emoji: "👍" });
    assert.equal(react.error.code, "forbidden");
    await api("alice", "PATCH", `/api/conversations/${conv.id}`, { status: "active" });
    assert.equal((await bob.ack("message:send", { conversation_id: conv.id, content: "again" })).ok, true);
    bob.close();
  },

  async read_receipts() {
    const conv = await group("alice", ["bob"]);
    const [alice, bob] = await Promise.all([connect("alice"), connect("bob")]);
    await alice.ack("message:send", { conversation_id: conv.id, content: "one" });
    await alice.ack("message:send", { conversation_id: conv.id, content: "two" });
    const ack = await bob.ack("message:read", { conversation_id: conv.id, seq: 2 });
    assert.deepEqual(ack, { ok: true, last_read_seq: 2 });
    assert.deepEqual(await alice.next("message:read"), { conversation_id: conv.id, user_id: "bob", seq: 2 });
    await bob.none("message:read");
    const backwards = await bob.ack("message:read", { conversation_id: conv.id, seq: 1 });
    assert.deepEqual(backwards, { ok: true, last_read_seq: 2 });
    await alice.none("message:read");
    alice.close();
    bob.close();
  },

  async typing() {
    const conv = await group("alice", ["bob"]);
    const [alice, bob] = await Promise.all([connect("alice"), connect("bob")]);
    const expected = { conversation_id: conv.id, user_id: "alice" };
    assert.deepEqual(await alice.ack("typing:start", { conversation_id: conv.id }), { ok: true });
    assert.deepEqual(await bob.next("typing:start"), expected);
    await alice.none("typing:start", 50);
    await alice.ack("typing:stop", { conversation_id: conv.id });
    assert.deepEqual(await bob.next("typing:stop"), expected);
    // Expiry: the test server's typing timeout is 1 s.
    await alice.ack("typing:start", { conversation_id: conv.id });
    await bob.next("typing:start");
    const started = Date.now();
    assert.deepEqual(await bob.next("typing:stop", () => true, 4000), expected);
    assert.ok(Date.now() - started >= 800, "stopped by the server's timeout, not at once");
    // Disconnecting stops typing.
    await alice.ack("typing:start", { conversation_id: conv.id });
    await bob.next("typing:start");
    alice.close();
    assert.deepEqual(await bob.next("typing:stop", () => true, 2000), expected);
    bob.close();
  },

  async presence() {
    await group("carol", ["bob"]);
    await group("dave", ["erin"]);
    const [carol, dave] = await Promise.all([connect("carol"), connect("dave")]);
    const tab1 = await connect("bob");
    assert.deepEqual(await carol.next("user:online"), { user_id: "bob" });
    const tab2 = await connect("bob");
    await carol.none("user:online");
    tab1.close();
    await carol.none("user:offline");
    tab2.close();
    const offline = await carol.next("user:offline");
    assert.equal(offline.user_id, "bob");
    assert.match(offline.last_seen_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    await dave.none("user:online", 50);
    await dave.none("user:offline", 50);
    const answer = await carol.ack("presence:query", { user_ids: ["bob", "carol", "nobody"] });
    assert.equal(answer.ok, true);
    assert.deepEqual(answer.presence.bob, { online: false, last_seen_at: offline.last_seen_at });
    assert.deepEqual(answer.presence.carol, { online: true, last_seen_at: null });
    assert.deepEqual(answer.presence.nobody, { online: false, last_seen_at: null });
    carol.close();
    dave.close();
  },

  async notification_branches() {
    // carol stays offline throughout but has no device: she never gets a push job.
    const conv = await group("alice", ["bob", "carol"]);
    const device = await api("bob", "POST", "/api/devices", { platform: "fcm", token: "bob-phone" });
    assert.equal(device.status, 201, JSON.stringify(device.body));
    const [alice, bob] = await Promise.all([connect("alice"), connect("bob")]);
    // Focused: message:new only; the server advances bob's read marker and says so.
    assert.deepEqual(await bob.ack("conversation:focus", { conversation_id: conv.id }), { ok: true });
    const first = await alice.ack("message:send", { conversation_id: conv.id, content: "are you there?" });
    await bob.next("message:new");
    assert.deepEqual(await alice.next("message:read"), { conversation_id: conv.id, user_id: "bob", seq: 1 });
    await bob.none("notification");
    const seen = await api("bob", "GET", `/api/conversations/${conv.id}`);
    assert.equal(seen.body.members.find((m) => m.user_id === "bob").last_read_seq, 1);
    // Online elsewhere: message:new and a notification with the unread count.
    assert.deepEqual(await bob.ack("conversation:unfocus", {}), { ok: true });
    const second = await alice.ack("message:send", { conversation_id: conv.id, content: "hello? " + "x".repeat(200) });
    await bob.next("message:new");
    const note = await bob.next("notification");
    assert.deepEqual(note, {
      type: "message",
      conversation_id: conv.id,
      message_id: second.message.id,
      seq: 2,
      sender_id: "alice",
      preview: second.message.content.slice(0, 100),
      unread_count: 1,
    });
    await alice.none("notification");
    // Offline: a push job is recorded (the Rust side checks the outbox).
    bob.close();
    await alice.next("user:offline");
    const third = await alice.ack("message:send", { conversation_id: conv.id, content: "call me" });
    // Muted: offline with a device, but no push job; unmuted again: one.
    const notify = (enabled) => api("bob", "PUT", `/api/conversations/${conv.id}/notifications`, { enabled });
    assert.equal((await notify(false)).status, 204);
    const muted = await alice.ack("message:send", { conversation_id: conv.id, content: "muted" });
    assert.equal((await notify(true)).status, 204);
    const fifth = await alice.ack("message:send", { conversation_id: conv.id, content: "unmuted" });
    alice.close();
    return {
      offline_message_ids: [third.message.id, fifth.message.id],
      muted_message_id: muted.message.id,
      online_message_ids: [first.message.id, second.message.id],
    };
  },

  // focus then unfocus, sent back-to-back: the later event wins although the focus handler
  // awaits a membership check and the unfocus handler does not.
  async focus_order() {
    const conv = await group("alice", ["bob"]);
    const [alice, bob] = await Promise.all([connect("alice"), connect("bob")]);
    for (let round = 0; round < 20; round++) {
      const [focused, unfocused] = await Promise.all([
        bob.ack("conversation:focus", { conversation_id: conv.id }),
        bob.ack("conversation:unfocus", {}),
      ]);
      assert.deepEqual([focused, unfocused], [{ ok: true }, { ok: true }]);
      const sent = await alice.ack("message:send", { conversation_id: conv.id, content: `round ${round}` });
      const note = await bob.next("notification", (n) => n.message_id === sent.message.id);
      assert.equal(note.seq, round + 1, `round ${round}: bob counted as focused`);
    }
    alice.close();
    bob.close();
  },

  async join_leave() {
    const conv = await group("alice", ["bob"]);
    const [alice, dave, bob] = await Promise.all([connect("alice"), connect("dave"), connect("bob")]);
    const refused = await dave.ack("conversation:join", { conversation_id: conv.id });
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, "not_a_member");
    const unknown = await dave.ack("conversation:join", { conversation_id: "no-such-conversation" });
    assert.equal(unknown.error.code, "not_found");
    await alice.ack("message:send", { conversation_id: conv.id, content: "members only" });
    await dave.none("message:new");
    // Leaving unsubscribes this socket only; joining again resubscribes it.
    assert.deepEqual(await alice.ack("conversation:leave", { conversation_id: conv.id }), { ok: true });
    await api("bob", "POST", `/api/conversations/${conv.id}/messages`, { content: "unheard" });
    // The send answers at commit and fans out a moment later: bob's socket receiving it shows
    // the fan-out is done before alice joins again.
    await bob.next("message:new", (m) => m.content === "unheard");
    await alice.none("message:new");
    assert.deepEqual(await alice.ack("conversation:join", { conversation_id: conv.id }), { ok: true });
    await api("bob", "POST", `/api/conversations/${conv.id}/messages`, { content: "heard" });
    assert.equal((await alice.next("message:new")).content, "heard");
    // Leaving also ends a focus: the conversation's messages notify again.
    await alice.ack("conversation:focus", { conversation_id: conv.id });
    await alice.ack("conversation:leave", { conversation_id: conv.id });
    const note = await api("bob", "POST", `/api/conversations/${conv.id}/messages`, { content: "ping" });
    await alice.next("notification", (n) => n.message_id === note.body.id);
    alice.close();
    dave.close();
    bob.close();
  },

  async membership_changes() {
    const [alice, bob, carol] = await Promise.all([connect("alice"), connect("bob"), connect("carol")]);
    const conv = await group("alice", ["bob"], "weekend");
    const announced = await bob.next("conversation:new");
    assert.equal(announced.id, conv.id);
    assert.equal(announced.name, "weekend");
    await api("alice", "POST", `/api/conversations/${conv.id}/messages`, { content: "welcome" });
    assert.equal((await bob.next("message:new")).content, "welcome");
    await api("alice", "POST", `/api/conversations/${conv.id}/members`, { user_ids: ["carol"] });
    const added = await carol.next("conversation:new");
    assert.ok(added.members.some((m) => m.user_id === "carol"));
    const updated = await bob.next("conversation:updated");
    assert.equal(updated.members.length, 3);
    await api("alice", "POST", `/api/conversations/${conv.id}/messages`, { content: "hi carol" });
    assert.equal((await carol.next("message:new")).content, "hi carol");
    await api("alice", "DELETE", `/api/conversations/${conv.id}/members/carol`);
    await carol.next("conversation:updated");
    await api("alice", "POST", `/api/conversations/${conv.id}/messages`, { content: "carol is gone" });
    assert.equal((await bob.next("message:new", (m) => m.content === "carol is gone")).seq, 3);
    await carol.none("message:new");
    for (const c of [alice, bob, carol]) c.close();
  },

  async sync_after_disconnect() {
    const conv = await group("alice", ["bob"]);
    let bob = await connect("bob");
    await api("alice", "POST", `/api/conversations/${conv.id}/messages`, { content: "before" });
    const seen = await bob.next("message:new");
    bob.close();
    const sent = [];
    for (let i = 0; i < 200; i += 20) {
      const batch = await Promise.all(
        Array.from({ length: 20 }, (_, j) =>
          api("alice", "POST", `/api/conversations/${conv.id}/messages`, { content: `missed ${i + j}` }),
        ),
      );
      sent.push(...batch.map((r) => r.body));
    }
    bob = await connect("bob");
    assert.deepEqual(bob.ready.conversations, [{ id: conv.id, last_seq: 201, last_revision: 0 }]);
    const received = [];
    let known = seen.seq;
    for (let round = 0; round < 20; round++) {
      const page = await bob.ack("sync", { conversations: { [conv.id]: known }, limit: 64 });
      assert.equal(page.ok, true, JSON.stringify(page));
      received.push(...page.messages);
      if (page.messages.length) known = page.messages.at(-1).seq;
      if (!page.has_more) break;
    }
    assert.deepEqual(received.map((m) => m.seq), Array.from({ length: 200 }, (_, i) => i + 2));
    assert.deepEqual(new Set(received.map((m) => m.id)), new Set(sent.map((m) => m.id)));
    // Conversations not listed sync from seq 0.
    const everything = await bob.ack("sync", { conversations: {}, limit: 1000 });
    assert.equal(everything.messages.length, 201);
    assert.equal(everything.has_more, false);
    bob.close();
  },

  async invalid_events() {
    const conv = await group("alice", ["bob"]);
    const [alice, bob, dave] = await Promise.all([connect("alice"), connect("bob"), connect("dave")]);
    const cases = [
      [alice, { conversation_id: conv.id, content: 5 }, "invalid"],
      [alice, { content: "no conversation" }, "invalid"],
      [alice, "just a string", "invalid"],
      [alice, { conversation_id: conv.id, content: "hi", surprise: true }, "invalid"],
      [alice, { conversation_id: "no-such-conversation", content: "hi" }, "not_found"],
      [alice, { conversation_id: conv.id, content: "x".repeat(4001) }, "too_large"],
      // Near the 64 KiB frame cap: read whole through the small websocket read buffer.
      [alice, { conversation_id: conv.id, content: "é".repeat(30000) }, "too_large"],
      [dave, { conversation_id: conv.id, content: "let me in" }, "not_a_member"],
    ];
    for (const [client, payload, code] of cases) {
      const ack = await client.ack("message:send", payload);
      assert.equal(ack.ok, false, JSON.stringify(payload).slice(0, 80));
      assert.equal(ack.error.code, code, JSON.stringify(ack));
      assert.equal(typeof ack.error.message, "string");
    }
    const badRead = await alice.ack("message:read", { conversation_id: conv.id, seq: "two" });
    assert.equal(badRead.error.code, "invalid");
    const unknown = await alice.ack("message:shout", { conversation_id: conv.id });
    assert.equal(unknown.error.code, "invalid", JSON.stringify(unknown));
    // Without an ack callback, a failure comes back as an `error` event.
    alice.socket.emit("message:send", { conversation_id: conv.id });
    const error = await alice.next("error");
    assert.equal(error.event, "message:send");
    assert.equal(error.code, "invalid");
    // Everyone is still connected and unaffected.
    assert.ok(alice.socket.connected && dave.socket.connected);
    const ok = await alice.ack("message:send", { conversation_id: conv.id, content: "still here" });
    assert.equal(ok.ok, true);
    assert.equal((await bob.next("message:new")).content, "still here");
    await bob.none("error", 50);
    for (const c of [alice, bob, dave]) c.close();
  },

  async polling_transport() {
    const conv = await group("alice", ["bob"]);
    const alice = await connect("alice", { transports: ["polling"] });
    const bob = await connect("bob");
    assert.equal(alice.socket.io.engine.transport.name, "polling");
    const sent = await alice.ack("message:send", { conversation_id: conv.id, content: "over polling" });
    assert.equal(sent.ok, true);
    assert.deepEqual(await bob.next("message:new"), sent.message);
    const reply = await bob.ack("message:send", { conversation_id: conv.id, content: "over websocket" });
    assert.deepEqual(await alice.next("message:new"), reply.message);
    alice.close();
    bob.close();
  },

  // The seeds' useChat flow: history over REST, then the socket for live messages, merged.
  async use_chat_flow() {
    const conv = await group("seller", ["buyer"]);
    for (const content of ["Is it still available?", "Yes!"]) {
      await api(content.startsWith("Is") ? "buyer" : "seller", "POST", `/api/conversations/${conv.id}/messages`, {
        content,
      });
    }
    const useChat = async (user) => {
      const history = (await api(user, "GET", `/api/conversations/${conv.id}/messages?limit=30`)).body.messages;
      const client = await connect(user);
      assert.deepEqual(await client.ack("conversation:join", { conversation_id: conv.id }), { ok: true });
      const realtime = [];
      client.socket.on("message:new", (m) => realtime.push(m));
      return { client, messages: () => [...history, ...realtime] };
    };
    const buyer = await useChat("buyer");
    const seller = await useChat("seller");
    const sent = await buyer.client.ack("message:send", { conversation_id: conv.id, content: "Can I pick it up today?" });
    await seller.client.next("message:new");
    const shown = seller.messages();
    assert.deepEqual(shown.map((m) => m.seq), [1, 2, 3]);
    assert.deepEqual(shown.at(-1), sent.message);
    buyer.client.close();
    seller.client.close();
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`unknown scenario ${name}; known: ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
const deadline = setTimeout(() => {
  console.error(`scenario ${name} timed out`);
  process.exit(1);
}, 60_000);
try {
  const result = await scenarios[name]();
  clearTimeout(deadline);
  console.log(JSON.stringify(result ?? { ok: true }));
  process.exit(0);
} catch (err) {
  console.error(err?.stack ?? err);
  process.exit(1);
}
