// Smoke check for the Node Socket.IO peer: starts server.js on a free port with a temporary
// database, then drives it the way the benchmark does (REST setup, Socket.IO clients,
// message:send with ack, message:new fan-out, sync, refused tokens).
// Usage: node smoke.mjs   (exits non-zero on any failure)

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import jwt from 'jsonwebtoken';
import { io } from 'socket.io-client';

const here = dirname(fileURLToPath(import.meta.url));
const SECRET = randomBytes(24).toString('hex');
const MESSAGE_KEYS = [
  'id', 'conversation_id', 'seq', 'sender_id', 'type', 'content', 'client_id', 'reply_to_id',
  'attachments', 'metadata', 'created_at', 'edited_at', 'deleted_at',
];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const RFC3339_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

let passed = 0;
let failed = 0;
const sockets = [];
let server;
let dir;

const token = (sub, opts = {}) =>
  jwt.sign({ sub }, opts.secret ?? SECRET, { algorithm: 'HS256', expiresIn: opts.expiresIn ?? '1h' });

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}\n     ${err.stack ?? err}`);
  }
}

function startServer() {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(here, 'server.js')], {
      env: { ...process.env, PORT: '0', JWT_SECRET: SECRET, DB_PATH: join(dir, 'peer.db') },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    const onData = (chunk) => {
      out += chunk;
      const m = /listening on (\S+):(\d+)/.exec(out);
      if (m) {
        child.stdout.off('data', onData);
        child.stdout.resume();
        resolve({ child, url: `http://${m[1]}:${m[2]}` });
      }
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.on('exit', (code) => reject(new Error(`server exited early (code ${code}): ${out}`)));
    child.on('error', reject);
  });
}

// Connects and resolves with { socket, ready } once `ready` arrives, or rejects with the
// connect_error.
function connect(url, authToken) {
  const socket = io(url, { auth: { token: authToken }, transports: ['websocket'], reconnection: false });
  sockets.push(socket);
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once('ready', (ready) => resolve({ socket, ready }));
      socket.once('connect_error', reject);
    }),
    5000,
    'ready',
  );
}

function nextEvent(socket, event, ms = 3000) {
  return withTimeout(new Promise((resolve) => socket.once(event, resolve)), ms, event);
}

async function main() {
  dir = await mkdtemp(join(tmpdir(), 'peer-smoke-'));
  const started = await withTimeout(startServer(), 15000, 'the server to listen');
  server = started.child;
  const { url } = started;
  console.log(`server at ${url}`);

  const alice = token('alice');
  const bob = token('bob');
  const carol = token('carol');
  let conv;

  await check('REST: POST /api/conversations creates a group, caller is owner', async () => {
    const res = await fetch(`${url}/api/conversations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${alice}` },
      body: JSON.stringify({ type: 'group', members: ['bob'], name: 'smoke' }),
    });
    assert.equal(res.status, 201);
    conv = await res.json();
    assert.match(conv.id, UUID);
    assert.equal(conv.type, 'group');
    assert.equal(conv.name, 'smoke');
    assert.equal(conv.last_seq, 0);
    assert.deepEqual(
      conv.members.map((m) => [m.user_id, m.role]),
      [['alice', 'owner'], ['bob', 'member']],
    );
  });
  if (!conv) throw new Error('cannot go on without a conversation');

  await check('REST: a bad bearer token gets 401 unauthorized', async () => {
    const res = await fetch(`${url}/api/conversations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token('alice', { secret: 'wrong' })}` },
      body: JSON.stringify({ type: 'group', members: [] }),
    });
    assert.equal(res.status, 401);
    assert.equal((await res.json()).error.code, 'unauthorized');
  });

  const a = await connect(url, alice);
  const b = await connect(url, bob);
  const c = await connect(url, carol);

  await check('ready lists the user\'s conversations with last_seq', async () => {
    assert.deepEqual(a.ready, { user_id: 'alice', conversations: [{ id: conv.id, last_seq: 0 }] });
    assert.deepEqual(b.ready, { user_id: 'bob', conversations: [{ id: conv.id, last_seq: 0 }] });
    assert.deepEqual(c.ready, { user_id: 'carol', conversations: [] });
  });

  let sent;
  await check('message:send acks the committed message; the other member gets message:new seq 1', async () => {
    let echoed = false;
    a.socket.on('message:new', () => { echoed = true; });
    const received = nextEvent(b.socket, 'message:new');
    const ack = await a.socket.timeout(3000).emitWithAck('message:send', {
      conversation_id: conv.id, content: 'hello', client_id: 'c-1',
    });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    sent = ack.message;
    assert.deepEqual(Object.keys(sent), MESSAGE_KEYS);
    assert.match(sent.id, UUID);
    assert.equal(sent.conversation_id, conv.id);
    assert.equal(sent.seq, 1);
    assert.equal(sent.sender_id, 'alice');
    assert.equal(sent.type, 'text');
    assert.equal(sent.content, 'hello');
    assert.equal(sent.client_id, 'c-1');
    assert.equal(sent.reply_to_id, null);
    assert.deepEqual(sent.attachments, []);
    assert.deepEqual(sent.metadata, {});
    assert.match(sent.created_at, RFC3339_MS);
    assert.equal(sent.edited_at, null);
    assert.equal(sent.deleted_at, null);
    assert.deepEqual(await received, sent);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(echoed, false, 'the sender got its own message:new');
  });

  await check('the same client_id returns the original message, no duplicate', async () => {
    let again = false;
    const listener = () => { again = true; };
    b.socket.on('message:new', listener);
    const ack = await a.socket.timeout(3000).emitWithAck('message:send', {
      conversation_id: conv.id, content: 'hello', client_id: 'c-1',
    });
    assert.equal(ack.ok, true);
    assert.deepEqual(ack.message, sent);
    await new Promise((r) => setTimeout(r, 100));
    b.socket.off('message:new', listener);
    assert.equal(again, false);
  });

  await check('a second message gets seq 2', async () => {
    const received = nextEvent(a.socket, 'message:new');
    const ack = await b.socket.timeout(3000).emitWithAck('message:send', { conversation_id: conv.id, content: 'hi alice' });
    assert.equal(ack.ok, true);
    assert.equal(ack.message.seq, 2);
    assert.equal(ack.message.client_id, null);
    assert.deepEqual(await received, ack.message);
  });

  await check('a non-member gets not_a_member', async () => {
    const ack = await c.socket.timeout(3000).emitWithAck('message:send', { conversation_id: conv.id, content: 'x' });
    assert.equal(ack.ok, false);
    assert.equal(ack.error.code, 'not_a_member');
  });

  await check('a malformed send gets invalid', async () => {
    const ack = await a.socket.timeout(3000).emitWithAck('message:send', { conversation_id: conv.id });
    assert.equal(ack.ok, false);
    assert.equal(ack.error.code, 'invalid');
  });

  await check('sync returns what was missed, ascending, with the heads', async () => {
    const all = await b.socket.timeout(3000).emitWithAck('sync', { conversations: {} });
    assert.equal(all.ok, true);
    assert.deepEqual(all.messages.map((m) => m.seq), [1, 2]);
    assert.deepEqual(all.messages[0], sent);
    assert.equal(all.has_more, false);
    assert.deepEqual(all.conversations, [{ id: conv.id, last_seq: 2 }]);
    const after1 = await b.socket.timeout(3000).emitWithAck('sync', { conversations: { [conv.id]: 1 }, limit: 10 });
    assert.deepEqual(after1.messages.map((m) => m.seq), [2]);
    const paged = await b.socket.timeout(3000).emitWithAck('sync', { conversations: {}, limit: 1 });
    assert.deepEqual(paged.messages.map((m) => m.seq), [1]);
    assert.equal(paged.has_more, true);
  });

  await check('a conversation created while connected is joined live', async () => {
    const announced = nextEvent(c.socket, 'conversation:new');
    const res = await fetch(`${url}/api/conversations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${alice}` },
      body: JSON.stringify({ type: 'direct', members: ['carol'] }),
    });
    assert.equal(res.status, 201);
    const direct = await res.json();
    assert.equal((await announced).id, direct.id);
    const received = nextEvent(c.socket, 'message:new');
    const ack = await a.socket.timeout(3000).emitWithAck('message:send', { conversation_id: direct.id, content: 'psst' });
    assert.equal(ack.ok, true);
    assert.equal((await received).seq, 1);
    const again = await fetch(`${url}/api/conversations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${alice}` },
      body: JSON.stringify({ type: 'direct', members: ['carol'] }),
    });
    assert.equal(again.status, 200);
    assert.equal((await again.json()).id, direct.id);
  });

  await check('a token signed with another secret is refused: connect_error unauthorized', async () => {
    await assert.rejects(connect(url, token('mallory', { secret: 'not-the-secret' })), { message: 'unauthorized' });
  });

  await check('a missing token is refused: connect_error unauthorized', async () => {
    await assert.rejects(connect(url, undefined), { message: 'unauthorized' });
  });

  await check('an expired token is refused: connect_error token_expired', async () => {
    await assert.rejects(connect(url, token('alice', { expiresIn: -10 })), { message: 'token_expired' });
  });
}

let exitCode = 0;
try {
  await withTimeout(main(), 60000, 'the smoke run');
} catch (err) {
  failed++;
  console.log(`FAIL setup\n     ${err.stack ?? err}`);
} finally {
  for (const s of sockets) s.disconnect();
  if (server && server.exitCode === null) {
    server.removeAllListeners('exit');
    const exited = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    await withTimeout(exited, 5000, 'the server to stop').catch(() => server.kill('SIGKILL'));
  }
  if (dir) await rm(dir, { recursive: true, force: true });
  console.log(`${passed} passed, ${failed} failed`);
  if (failed > 0 || passed === 0) exitCode = 1;
}
process.exit(exitCode);
