// Socket.IO traffic for the fault-injection suite (tests/faults.rs): many official
// socket.io-client connections in one process, each acting as a careful chat client.
//   CHATD_SECRET=... node faults.mjs
// stdin, one JSON line each:
//   {"cmd":"start","nodes":[url…],"clients":[{user,home,conversations:[id…]}],"interval_ms","send_timeout_ms","ack_timeout_ms"}
//   {"cmd":"run"}      every client sends a message every interval_ms, alternating its conversations
//   {"cmd":"stop"}     no new sends; answers {"stopped":true} once no send waits for its ack
//   {"cmd":"peek","heads":{conversation:seq}}  answers {"behind":n}: how many clients do not
//                      hold exactly seqs 1 to the head of each of their conversations
//   {"cmd":"settle"}   every client syncs until caught up; answers {"settled":[report…]}
//   {"cmd":"quit"}
// A client sends with an ack (timeout: send_timeout_ms) and a client_id of its own; a send that
// failed or was not acked is sent again with the same client_id (on a new connection if the
// old one is gone) until it is acked. It reconnects to the first node that answers (its home
// node first), and calls `sync` after connecting, on `sync:required`, and when a seq gap
// stays open for a second. A report: {user, acked:[[conversation, seq, client_id]…] and
// retried (send attempts that failed and were repeated), failures ({why: count}: an error
// ack's code or "no ack") and reconnected (connections opened again) since the last report,
// strays (messages of conversations it is not in, ever),
// received:{conversation:{count, max, missing:[…up to 20]}}}.
import { createHmac } from "node:crypto";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const SECRET = process.env.CHATD_SECRET;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const log = (...args) => process.stderr.write(args.join(" ") + "\n");

function token(sub) {
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${unsigned}.${createHmac("sha256", SECRET).update(unsigned).digest("base64url")}`;
}

let config = null;
let sending = false;
let quitting = false;

class TrafficClient {
  constructor({ user, home, conversations }) {
    this.user = user;
    this.home = home;
    this.conversations = conversations;
    this.received = new Map(conversations.map((id) => [id, new Set()]));
    this.contiguous = new Map(conversations.map((id) => [id, 0]));
    this.acked = [];
    this.retried = 0;
    this.failures = {};
    this.reconnected = 0;
    this.connectedOnce = false;
    this.strays = 0;
    this.socket = null;
    this.needSync = true;
    this.syncRequests = 0;
    this.pending = null;
    this.sent = 0;
    this.nextSendAt = Date.now() + Math.random() * config.interval_ms;
    this.gapSince = null;
  }

  /** Records a seq of one of this client's conversations. */
  take(conversation, seq) {
    const seqs = this.received.get(conversation);
    if (!seqs) {
      this.strays += 1;
      return;
    }
    seqs.add(seq);
    let last = this.contiguous.get(conversation);
    while (seqs.has(last + 1)) last += 1;
    this.contiguous.set(conversation, last);
  }

  /** Asks for a sync; one already running when asked does not count. */
  requestSync() {
    this.needSync = true;
    this.syncRequests += 1;
  }

  hasGap() {
    return this.conversations.some((id) => this.received.get(id).size > this.contiguous.get(id));
  }

  /** Connects to the first node that answers with `ready`, home first. */
  async connect() {
    for (let k = 0; k < config.nodes.length; k++) {
      const url = config.nodes[(this.home + k) % config.nodes.length];
      const socket = io(url, {
        auth: { token: token(this.user) },
        transports: ["websocket"],
        reconnection: false,
        forceNew: true,
        timeout: 3000,
      });
      const ready = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), 4000);
        socket.once("ready", () => {
          clearTimeout(timer);
          resolve(true);
        });
        socket.once("connect_error", () => {
          clearTimeout(timer);
          resolve(false);
        });
      });
      if (!ready) {
        socket.close();
        continue;
      }
      socket.on("message:new", (message) => {
        if (message && typeof message.seq === "number") this.take(message.conversation_id, message.seq);
      });
      socket.on("sync:required", () => this.requestSync());
      socket.on("disconnect", () => {
        if (this.socket === socket) this.socket = null;
      });
      this.socket = socket;
      this.requestSync();
      if (this.connectedOnce) this.reconnected += 1;
      this.connectedOnce = true;
      return;
    }
    await sleep(200);
  }

  /** Emits with an ack; null when no ack came within `ms` (the connection is then dropped). */
  async call(event, data, ms = config.ack_timeout_ms) {
    const socket = this.socket;
    if (socket === null) return null;
    try {
      return await socket.timeout(ms).emitWithAck(event, data);
    } catch {
      if (this.socket === socket) {
        this.socket = null;
        socket.close();
      }
      return null;
    }
  }

  async sync() {
    const asked = this.syncRequests;
    for (;;) {
      const since = Object.fromEntries(this.conversations.map((id) => [id, this.contiguous.get(id)]));
      const ack = await this.call("sync", { conversations: since });
      if (ack === null) return;
      if (!ack.ok) {
        await sleep(500);
        return;
      }
      for (const message of ack.messages) this.take(message.conversation_id, message.seq);
      if (!ack.has_more) break;
    }
    if (this.syncRequests === asked) this.needSync = false;
    this.gapSince = null;
  }

  async send() {
    const { conversation, clientId } = this.pending;
    const ack = await this.call("message:send", {
      conversation_id: conversation,
      content: `${this.user} says ${clientId}`,
      client_id: clientId,
    }, config.send_timeout_ms);
    if (ack === null || !ack.ok) {
      this.retried += 1;
      const why = ack === null ? "no ack" : (ack.error?.code ?? "malformed ack");
      this.failures[why] = (this.failures[why] ?? 0) + 1;
      if (ack !== null) await sleep(200);
      return;
    }
    this.acked.push([conversation, ack.message.seq, clientId]);
    this.take(conversation, ack.message.seq);
    this.pending = null;
  }

  /** One step of the client's life; false when there was nothing to do. */
  async step() {
    if (this.socket === null) {
      await this.connect();
      return true;
    }
    if (this.pending !== null) {
      await this.send();
      return true;
    }
    if (this.hasGap()) {
      this.gapSince ??= Date.now();
      if (Date.now() - this.gapSince > 1000) this.requestSync();
    } else {
      this.gapSince = null;
    }
    if (this.needSync) {
      await this.sync();
      return true;
    }
    if (sending && Date.now() >= this.nextSendAt) {
      const conversation = this.conversations[this.sent % this.conversations.length];
      this.pending = { conversation, clientId: `${this.user}-${this.sent}` };
      this.sent += 1;
      this.nextSendAt += config.interval_ms;
      if (this.nextSendAt < Date.now()) this.nextSendAt = Date.now() + config.interval_ms;
      return true;
    }
    return false;
  }

  async live() {
    while (!quitting) {
      if (!(await this.step())) await sleep(20);
    }
    this.socket?.close();
  }

  holdsExactly(heads) {
    return this.conversations.every((id) => {
      const head = heads[id] ?? 0;
      return this.received.get(id).size === head && this.contiguous.get(id) === head;
    });
  }

  report() {
    const received = {};
    for (const id of this.conversations) {
      const seqs = this.received.get(id);
      const max = seqs.size === 0 ? 0 : Math.max(...seqs);
      const missing = [];
      for (let seq = 1; seq <= max && missing.length < 20; seq++) if (!seqs.has(seq)) missing.push(seq);
      received[id] = { count: seqs.size, max, missing };
    }
    const { acked, retried, failures, reconnected } = this;
    this.acked = [];
    this.retried = 0;
    this.failures = {};
    this.reconnected = 0;
    return { user: this.user, acked, retried, failures, reconnected, strays: this.strays, received };
  }
}

let clients = [];

async function until(condition) {
  while (!condition()) await sleep(20);
}

const lines = createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  const command = JSON.parse(line);
  switch (command.cmd) {
    case "start":
      config = command;
      clients = command.clients.map((c) => new TrafficClient(c));
      for (const client of clients) client.live();
      await until(() => clients.every((c) => c.socket !== null && !c.needSync));
      out({ started: true });
      break;
    case "run":
      for (const client of clients) client.nextSendAt = Date.now() + Math.random() * config.interval_ms;
      sending = true;
      break;
    case "stop":
      sending = false;
      await until(() => clients.every((c) => c.pending === null));
      out({ stopped: true });
      break;
    case "peek":
      out({ behind: clients.filter((c) => !c.holdsExactly(command.heads)).length });
      break;
    case "settle":
      for (const client of clients) client.requestSync();
      await until(() => clients.every((c) => c.socket !== null && !c.needSync && c.pending === null));
      out({ settled: clients.map((c) => c.report()) });
      break;
    case "quit":
      quitting = true;
      await sleep(100);
      process.exit(0);
      break;
    default:
      log(`unknown command ${line}`);
  }
});
lines.on("close", () => process.exit(0));
