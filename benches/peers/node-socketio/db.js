'use strict';

// SQLite store for the peer: the seeds' tables (conversations, conversation_members,
// messages) in SQLite, plus the per-conversation `seq` that chatd's wire contract needs.
//
// better-sqlite3 is synchronous: each call below runs and, for writes, commits before it
// returns. Where the seeds write `await db.message.create(...)` against a pooled driver,
// this peer runs the same statements on the event loop thread; the message is committed
// before the ack is sent either way.

const crypto = require('node:crypto');
const Database = require('better-sqlite3');

const SCHEMA = `
CREATE TABLE IF NOT EXISTS conversations (
  id              TEXT PRIMARY KEY,
  type            TEXT NOT NULL,              -- 'direct' | 'group'
  name            TEXT,
  context         TEXT,
  metadata        TEXT NOT NULL DEFAULT '{}',
  direct_key      TEXT UNIQUE,                -- direct chats: one per pair and context
  last_seq        INTEGER NOT NULL DEFAULT 0,
  last_message_at TEXT,
  created_at      TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS conversation_members (
  conversation_id TEXT NOT NULL REFERENCES conversations(id),
  user_id         TEXT NOT NULL,
  role            TEXT NOT NULL DEFAULT 'member', -- owner | admin | member
  joined_at       TEXT NOT NULL,
  last_read_seq   INTEGER NOT NULL DEFAULT 0,
  notifications   INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX IF NOT EXISTS conversation_members_user ON conversation_members(user_id);

CREATE TABLE IF NOT EXISTS messages (
  id              TEXT PRIMARY KEY,
  conversation_id TEXT NOT NULL REFERENCES conversations(id),
  seq             INTEGER NOT NULL,
  sender_id       TEXT NOT NULL,
  type            TEXT NOT NULL DEFAULT 'text',
  content         TEXT,
  client_id       TEXT,
  reply_to_id     TEXT,
  attachments     TEXT NOT NULL DEFAULT '[]',
  metadata        TEXT NOT NULL DEFAULT '{}',
  created_at      TEXT NOT NULL,
  edited_at       TEXT,
  deleted_at      TEXT,
  UNIQUE (conversation_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_client_id
  ON messages(conversation_id, sender_id, client_id) WHERE client_id IS NOT NULL;
`;

function messageFromRow(row) {
  return {
    id: row.id,
    conversation_id: row.conversation_id,
    seq: row.seq,
    sender_id: row.sender_id,
    type: row.type,
    content: row.content,
    client_id: row.client_id,
    reply_to_id: row.reply_to_id,
    attachments: JSON.parse(row.attachments),
    metadata: JSON.parse(row.metadata),
    created_at: row.created_at,
    edited_at: row.edited_at,
    deleted_at: row.deleted_at,
  };
}

function openDb(path) {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  db.exec(SCHEMA);

  const stmt = {
    insertConversation: db.prepare(`
      INSERT INTO conversations (id, type, name, context, metadata, direct_key, created_at)
      VALUES (@id, @type, @name, @context, @metadata, @direct_key, @created_at)`),
    insertMember: db.prepare(`
      INSERT INTO conversation_members (conversation_id, user_id, role, joined_at)
      VALUES (?, ?, ?, ?)`),
    conversationById: db.prepare('SELECT * FROM conversations WHERE id = ?'),
    conversationByDirectKey: db.prepare('SELECT id FROM conversations WHERE direct_key = ?'),
    membersOf: db.prepare(`
      SELECT user_id, role, joined_at, last_read_seq, notifications
      FROM conversation_members WHERE conversation_id = ? ORDER BY rowid`),
    conversationsOfUser: db.prepare(`
      SELECT c.id, c.last_seq FROM conversation_members m
      JOIN conversations c ON c.id = m.conversation_id
      WHERE m.user_id = ? ORDER BY c.created_at, c.id`),
    membership: db.prepare(`
      SELECT role FROM conversation_members WHERE conversation_id = ? AND user_id = ?`),
    messageByClientId: db.prepare(`
      SELECT * FROM messages WHERE conversation_id = ? AND sender_id = ? AND client_id = ?`),
    nextSeq: db.prepare(`
      UPDATE conversations SET last_seq = last_seq + 1, last_message_at = ?
      WHERE id = ? RETURNING last_seq`),
    insertMessage: db.prepare(`
      INSERT INTO messages (id, conversation_id, seq, sender_id, type, content, client_id, created_at)
      VALUES (@id, @conversation_id, @seq, @sender_id, @type, @content, @client_id, @created_at)`),
    messagesAfter: db.prepare(`
      SELECT * FROM messages WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?`),
    unreadCount: db.prepare(`
      SELECT COUNT(*) AS n FROM messages
      WHERE conversation_id = ? AND seq > ? AND sender_id <> ? AND deleted_at IS NULL`),
    lastMessage: db.prepare(`
      SELECT * FROM messages WHERE conversation_id = ? ORDER BY seq DESC LIMIT 1`),
  };

  const createConversationTx = db.transaction((conv, members) => {
    stmt.insertConversation.run(conv);
    for (const m of members) {
      stmt.insertMember.run(conv.id, m.user_id, m.role, conv.created_at);
    }
  });

  const appendMessageTx = db.transaction((msg) => {
    const { last_seq: seq } = stmt.nextSeq.get(msg.created_at, msg.conversation_id);
    msg.seq = seq;
    stmt.insertMessage.run(msg);
    return msg;
  });

  return {
    close: () => db.close(),

    // POST /api/conversations: the caller becomes owner, everyone else member.
    // Returns { id, created }: a direct chat that already exists is returned as is.
    createConversation({ ownerId, type, name, context, metadata, memberIds }) {
      let directKey = null;
      if (type === 'direct') {
        const pair = [ownerId, memberIds[0]].sort();
        directKey = JSON.stringify([pair[0], pair[1], context ?? null]);
        const existing = stmt.conversationByDirectKey.get(directKey);
        if (existing) return { id: existing.id, created: false };
      }
      const conv = {
        id: crypto.randomUUID(),
        type,
        name: name ?? null,
        context: context ?? null,
        metadata: JSON.stringify(metadata ?? {}),
        direct_key: directKey,
        created_at: new Date().toISOString(),
      };
      const members = [{ user_id: ownerId, role: 'owner' }];
      for (const id of memberIds) members.push({ user_id: id, role: 'member' });
      createConversationTx(conv, members);
      return { id: conv.id, created: true };
    },

    // The conversation object as chatd returns it, seen by `viewerId`.
    getConversation(id, viewerId) {
      const c = stmt.conversationById.get(id);
      if (!c) return null;
      const members = stmt.membersOf.all(id).map((m) => ({
        user_id: m.user_id,
        role: m.role,
        joined_at: m.joined_at,
        last_read_seq: m.last_read_seq,
        notifications: m.notifications === 1,
      }));
      const last = c.last_seq > 0 ? stmt.lastMessage.get(id) : undefined;
      const me = members.find((m) => m.user_id === viewerId);
      const unread =
        me && c.last_seq > me.last_read_seq
          ? stmt.unreadCount.get(id, me.last_read_seq, viewerId).n
          : 0;
      return {
        id: c.id,
        type: c.type,
        name: c.name,
        context: c.context,
        metadata: JSON.parse(c.metadata),
        members,
        last_seq: c.last_seq,
        last_message: last ? messageFromRow(last) : null,
        last_message_at: c.last_message_at,
        created_at: c.created_at,
        unread_count: unread,
      };
    },

    // [{ id, last_seq }] for every conversation the user belongs to.
    conversationsOf(userId) {
      return stmt.conversationsOfUser.all(userId);
    },

    isMember(conversationId, userId) {
      return stmt.membership.get(conversationId, userId) !== undefined;
    },

    findByClientId(conversationId, senderId, clientId) {
      const row = stmt.messageByClientId.get(conversationId, senderId, clientId);
      return row ? messageFromRow(row) : null;
    },

    // Assigns the next seq and inserts the message in one transaction; committed on return.
    createMessage({ conversationId, senderId, content, clientId }) {
      const msg = appendMessageTx({
        id: crypto.randomUUID(),
        conversation_id: conversationId,
        seq: 0,
        sender_id: senderId,
        type: 'text',
        content,
        client_id: clientId ?? null,
        created_at: new Date().toISOString(),
      });
      return {
        id: msg.id,
        conversation_id: msg.conversation_id,
        seq: msg.seq,
        sender_id: msg.sender_id,
        type: msg.type,
        content: msg.content,
        client_id: msg.client_id,
        reply_to_id: null,
        attachments: [],
        metadata: {},
        created_at: msg.created_at,
        edited_at: null,
        deleted_at: null,
      };
    },

    messagesAfter(conversationId, afterSeq, limit) {
      return stmt.messagesAfter.all(conversationId, afterSeq, limit).map(messageFromRow);
    },
  };
}

module.exports = { openDb };
