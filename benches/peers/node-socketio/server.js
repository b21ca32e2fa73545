'use strict';

// The Node.js + Socket.IO chat server the seed articles describe (express + http server,
// JWT middleware on the handshake, a room per conversation, store the message, then
// broadcast), speaking chatd's events and payloads so the same load generator drives both.
// See README.md.

const http = require('node:http');
const express = require('express');
const jwt = require('jsonwebtoken');
const { Server } = require('socket.io');
const { openDb } = require('./db');

const PORT = Number(process.env.PORT ?? 4000);
const HOST = process.env.HOST || '127.0.0.1';
const DB_PATH = process.env.DB_PATH || './peer.db';
const JWT_SECRET = process.env.JWT_SECRET;
const MAX_CONTENT_CHARS = 4000;
const MAX_PAYLOAD_BYTES = 64 * 1024;
const SYNC_DEFAULT = 500;
const SYNC_MAX = 1000;

if (!JWT_SECRET) {
  console.error('JWT_SECRET is required');
  process.exit(1);
}

const db = openDb(DB_PATH);

// ---------------------------------------------------------------- auth

class AppError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}
const invalid = (message) => new AppError('invalid', message, 400);

// Returns the user id (the token's `sub`), or throws AppError unauthorized / token_expired.
function verifyToken(token) {
  if (typeof token !== 'string' || token === '') {
    throw new AppError('unauthorized', 'missing token', 401);
  }
  let payload;
  try {
    payload = jwt.verify(token, JWT_SECRET, { algorithms: ['HS256'] });
  } catch (err) {
    if (err instanceof jwt.TokenExpiredError) {
      throw new AppError('token_expired', 'token expired', 401);
    }
    throw new AppError('unauthorized', 'invalid token', 401);
  }
  if (typeof payload.sub !== 'string' || payload.sub === '' || payload.exp === undefined) {
    throw new AppError('unauthorized', 'invalid token', 401);
  }
  return payload.sub;
}

function bearer(header) {
  if (typeof header !== 'string') return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(header);
  return m ? m[1] : undefined;
}

// ---------------------------------------------------------------- REST (express)

const app = express();
app.use(express.json({ limit: MAX_PAYLOAD_BYTES }));

function requireAuth(req, res, next) {
  try {
    req.userId = verifyToken(bearer(req.headers.authorization));
    next();
  } catch (err) {
    next(err);
  }
}

app.get('/healthz', (req, res) => {
  res.type('text/plain').send('ok');
});

app.post('/api/conversations', requireAuth, (req, res) => {
  const body = req.body;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw invalid('expected a JSON object');
  }
  const { type, members = [], name = null, context = null, metadata = {} } = body;
  if (type !== 'group' && type !== 'direct') throw invalid('type must be "direct" or "group"');
  if (!Array.isArray(members) || !members.every((m) => typeof m === 'string' && m !== '')) {
    throw invalid('members must be an array of user ids');
  }
  if (name !== null && typeof name !== 'string') throw invalid('name must be a string');
  if (context !== null && typeof context !== 'string') throw invalid('context must be a string');
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) {
    throw invalid('metadata must be an object');
  }
  const others = [...new Set(members)].filter((id) => id !== req.userId);
  if (type === 'direct' && others.length !== 1) {
    throw invalid('a direct conversation needs exactly one other member');
  }

  const { id, created } = db.createConversation({
    ownerId: req.userId,
    type,
    name,
    context,
    metadata,
    memberIds: others,
  });
  const conversation = db.getConversation(id, req.userId);
  if (created) {
    // Members already online start receiving the new conversation's messages.
    const userRooms = conversation.members.map((m) => `user:${m.user_id}`);
    io.in(userRooms).socketsJoin(`conv:${id}`);
    io.to(userRooms).emit('conversation:new', conversation);
  }
  res.status(created ? 201 : 200).json(conversation);
});

app.use((req, res) => {
  res.status(404).json({ error: { code: 'not_found', message: 'no such route' } });
});

// express 5 forwards thrown errors (sync or async) here.
app.use((err, req, res, next) => {
  if (err instanceof AppError) {
    return res.status(err.status).json({ error: { code: err.code, message: err.message } });
  }
  if (err.type === 'entity.too.large') {
    return res.status(413).json({ error: { code: 'too_large', message: 'payload too large' } });
  }
  if (err.type === 'entity.parse.failed') {
    return res.status(400).json({ error: { code: 'invalid', message: 'malformed JSON' } });
  }
  console.error(err);
  res.status(500).json({ error: { code: 'internal', message: 'internal error' } });
});

// ---------------------------------------------------------------- Socket.IO

const httpServer = http.createServer({ noDelay: true }, app);
const io = new Server(httpServer, {
  maxHttpBufferSize: MAX_PAYLOAD_BYTES,
});

// JWT on the handshake: `auth: { token }` (or `?token=`, or an Authorization header).
io.use((socket, next) => {
  const { auth, query, headers } = socket.handshake;
  const token = auth?.token ?? query?.token ?? bearer(headers.authorization);
  try {
    socket.data.userId = verifyToken(token);
    next();
  } catch (err) {
    next(new Error(err instanceof AppError ? err.code : 'unauthorized'));
  }
});

function fail(ack, err) {
  if (err instanceof AppError) {
    ack({ ok: false, error: { code: err.code, message: err.message } });
  } else {
    console.error(err);
    ack({ ok: false, error: { code: 'internal', message: 'internal error' } });
  }
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

io.on('connection', (socket) => {
  const userId = socket.data.userId;

  // Join a room per conversation the user belongs to, and the user's own room.
  const conversations = db.conversationsOf(userId);
  socket.join([`user:${userId}`, ...conversations.map((c) => `conv:${c.id}`)]);
  socket.emit('ready', { user_id: userId, conversations });

  socket.on('message:send', (data, ack) => {
    if (typeof ack !== 'function') ack = () => {};
    try {
      if (!isObject(data)) throw invalid('expected an object');
      const { conversation_id: conversationId, content, client_id: clientId, type } = data;
      if (typeof conversationId !== 'string' || conversationId === '') {
        throw invalid('conversation_id is required');
      }
      if (type !== undefined && type !== 'text') throw invalid('only text messages are supported');
      if (typeof content !== 'string') throw invalid('content is required for text messages');
      if (content.length > MAX_CONTENT_CHARS && [...content].length > MAX_CONTENT_CHARS) {
        throw new AppError('too_large', `content is longer than ${MAX_CONTENT_CHARS} characters`, 413);
      }
      if (content.trim() === '') throw invalid('content must not be blank');
      if (clientId !== undefined && clientId !== null && (typeof clientId !== 'string' || clientId === '')) {
        throw invalid('client_id must be a non-empty string');
      }

      if (!db.isMember(conversationId, userId)) {
        throw new AppError('not_a_member', 'not a member of this conversation', 403);
      }
      if (clientId) {
        const original = db.findByClientId(conversationId, userId, clientId);
        if (original) return ack({ ok: true, message: original });
      }

      // Committed before the ack.
      const message = db.createMessage({ conversationId, senderId: userId, content, clientId });
      ack({ ok: true, message });
      socket.to(`conv:${conversationId}`).emit('message:new', message);
    } catch (err) {
      fail(ack, err);
    }
  });

  // Catch-up after a reconnect: everything after the client's last seq per conversation
  // (from 0 for conversations it did not list), ascending per conversation.
  socket.on('sync', (data, ack) => {
    if (typeof ack !== 'function') ack = () => {};
    try {
      if (data === undefined || data === null) data = {};
      if (!isObject(data)) throw invalid('expected an object');
      const known = data.conversations ?? {};
      if (!isObject(known)) throw invalid('conversations must be an object');
      for (const seq of Object.values(known)) {
        if (!Number.isInteger(seq) || seq < 0) throw invalid('seqs must be non-negative integers');
      }
      let limit = SYNC_DEFAULT;
      if (data.limit !== undefined && data.limit !== null) {
        if (!Number.isInteger(data.limit) || data.limit < 1) throw invalid('limit must be at least 1');
        limit = Math.min(data.limit, SYNC_MAX);
      }

      const heads = db.conversationsOf(userId);
      const messages = [];
      let hasMore = false;
      for (const head of heads) {
        const after = known[head.id] ?? 0;
        if (head.last_seq <= after) continue;
        const remaining = limit - messages.length;
        if (remaining === 0) {
          hasMore = true;
          break;
        }
        const page = db.messagesAfter(head.id, after, remaining + 1);
        if (page.length > remaining) {
          messages.push(...page.slice(0, remaining));
          hasMore = true;
          break;
        }
        messages.push(...page);
      }
      ack({ ok: true, messages, has_more: hasMore, conversations: heads });
    } catch (err) {
      fail(ack, err);
    }
  });
});

// ---------------------------------------------------------------- start / stop

httpServer.listen(PORT, HOST, () => {
  const { address, port } = httpServer.address();
  console.log(`listening on ${address}:${port}`);
});

function shutdown() {
  io.close(() => {
    db.close();
    process.exit(0);
  });
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
