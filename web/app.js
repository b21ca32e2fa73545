// chatd's bundled web chat: a small client of the REST API (lists, history, creating chats)
// and the plain WebSocket transport /ws (live events, sends, receipts, typing, presence).
// No framework and no build step. Every piece of user content reaches the page through
// textContent or createTextNode (see h()), never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "chatd.token";
  const PAGE = 30; // messages per history page
  const LIST_PAGE = 20; // conversations per list page
  const TYPING_EVERY_MS = 2000; // at most one typing:start per this interval
  const TYPING_FALLBACK_MS = 7000; // forget a remote typist the server never stopped
  const ACK_TIMEOUT_MS = 10000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const MAX_FILES_AT_ONCE = 10; // files one pick, drop or paste may send
  /** Image types every browser shows, so a pending upload can show its picture. */
  const PREVIEWABLE = new Set(["image/jpeg", "image/png", "image/gif", "image/webp"]);
  const KIND_ICONS = { image: "🖼️", video: "🎬", audio: "🎵", file: "📄" };
  /** The reactions the picker offers (any emoji others used shows as a chip anyway). */
  const QUICK_REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🙏"];
  const SEARCH_PAGE = 20; // results per search page
  const SEARCH_DELAY_MS = 350; // typing pause before the search box asks the server
  const SNIPPET_CHARS = 160; // a result longer than this (in characters) is shown from near its first match
  const SNIPPET_LEAD = 40; // characters shown before that match

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------------------
  // DOM helpers

  /** createElement with properties and children; strings become text nodes. */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  /**
   * Makes `container`'s children the elements of `items` ({key, sig, build}) in that order,
   * reusing an element while its `sig` is unchanged. `cache` maps key → {sig, el}.
   */
  function reconcile(container, cache, items) {
    const keep = new Set();
    let cursor = container.firstChild;
    for (const item of items) {
      keep.add(item.key);
      let entry = cache.get(item.key);
      if (!entry || entry.sig !== item.sig) {
        const el = item.build();
        if (entry) {
          if (entry.el === cursor) cursor = el;
          entry.el.replaceWith(el);
        }
        entry = { sig: item.sig, el };
        cache.set(item.key, entry);
      }
      if (entry.el === cursor) cursor = cursor.nextSibling;
      else container.insertBefore(entry.el, cursor);
    }
    for (const [key, entry] of cache) {
      if (!keep.has(key)) {
        entry.el.remove();
        cache.delete(key);
      }
    }
  }

  let noticeTimer = null;
  /** A short message at the bottom of the screen. */
  function notice(text) {
    const el = $("notice");
    el.textContent = text;
    el.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => (el.hidden = true), 6000);
  }

  function clockTime(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  // ---------------------------------------------------------------------------------------
  // State

  /** Everything the page knows; reset on sign-out. */
  function freshState() {
    return {
      token: null,
      me: null, // user id (the token's `sub`)
      myName: null,
      session: 0, // bumped on sign-in/out so late async results of an old session are dropped
      conversations: new Map(), // id → conversation, kept current by events
      nextCursor: null,
      listLoaded: false, // first list page arrived (before it, "no conversations" is not shown)
      chats: new Map(), // id → loaded history, see newChat()
      // client_id → {conversation_id, content, state: uploading|queued|sending|failed, error, at,
      // upload?: {file, name, size, type, kind, progress, id, xhr, previewUrl}} (see sendFiles)
      pending: new Map(),
      presence: new Map(), // user_id → {online, last_seen_at}
      typing: new Map(), // conversation_id → Map(user_id → fallback timer)
      heads: new Map(), // conversation_id → its last_revision in the latest ready/sync head
      openId: null, // the conversation on screen
      focusedId: null, // what the server was last told we look at
      editing: null, // `${where}:${message id}` being edited (see messageItem)
      confirmDelete: null, // `${where}:${message id}` whose delete waits for a second click
      picker: null, // `${where}:${message id}` whose reaction picker is open
      messageErrors: new Map(), // message id → why the last action on it failed (shown on it)
      reacted: new Map(), // message id → Map(emoji → ours?) from our own react/unreact acks
      // The thread panel: {conversationId, rootId, root, replies: Map(seq → message), loading,
      // error, sending}, or null when closed.
      thread: null,
      // The pins panel: {conversationId, messages: Map(id → message), versions: Map(id → newest
      // version seen), loading, error}, or null when closed.
      pins: null,
      search: null, // {query, results: [{message, highlights}], nextCursor, loading, error}, or null
      reveal: null, // message id to scroll to once it is on screen (a search result)
    };
  }
  let state = freshState();

  function newChat() {
    return {
      messages: new Map(), // seq → message
      top: 0, // every seq from the oldest loaded up to `top` is present
      loaded: false, // first page fetched
      revision: 0, // the conversation's change counter as of which we hold its messages' state
      hasOlder: false,
      loadingOlder: false,
      fillingGap: false,
    };
  }

  /** The JWT's claims (unverified: only to show who we are and when it expires). */
  function claims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const json = decodeURIComponent(
        Array.from(atob(part), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
      );
      return JSON.parse(json);
    } catch {
      return null;
    }
  }

  function tokenExpired(token) {
    const exp = claims(token)?.exp;
    return typeof exp === "number" && exp * 1000 < Date.now();
  }

  // ---------------------------------------------------------------------------------------
  // REST

  /** A REST call; resolves the parsed body, throws an Error with `.code` and `.status`. */
  async function api(method, path, body, { auth = true } = {}) {
    const session = state.session;
    const headers = {};
    if (auth) headers.authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const err = new Error(data?.error?.message || `HTTP ${res.status}`);
      err.code = data?.error?.code || `http_${res.status}`;
      err.status = res.status;
      if (auth && res.status === 401 && session === state.session && state.token) {
        signOut(err.code === "token_expired" ? "Your session expired: sign in again." : "The server refused the token: sign in again.");
      }
      throw err;
    }
    if (session !== state.session) throw Object.assign(new Error("signed out"), { code: "stale" });
    return data;
  }

  // ---------------------------------------------------------------------------------------
  // The WebSocket connection

  const conn = {
    ws: null,
    ready: false, // `ready` received on the current socket
    attempt: 0, // failed attempts since the last `ready`
    timer: null, // reconnect timer
    nextId: 1,
    waiting: new Map(), // frame id → {resolve, reject, timer}
  };

  function wsUrl() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/ws?token=${encodeURIComponent(state.token)}`;
  }

  function connect() {
    clearTimeout(conn.timer);
    conn.timer = null;
    if (!state.token || conn.ws) return;
    if (tokenExpired(state.token)) {
      signOut("Your session expired: sign in again.");
      return;
    }
    setStatus("connecting", "connecting…");
    const ws = new WebSocket(wsUrl());
    let opened = false;
    conn.ws = ws;
    conn.ready = false;
    ws.onopen = () => (opened = true);
    ws.onmessage = (event) => {
      if (conn.ws === ws) onFrame(event.data);
    };
    ws.onclose = (event) => onClose(ws, event, opened);
  }

  /** Closes the current socket on purpose (sign-out, or the browser says it is offline). */
  function dropSocket(reason) {
    const ws = conn.ws;
    if (!ws) return;
    onClose(ws, { code: 1000, reason }, true);
    ws.close(1000, reason);
  }

  async function onClose(ws, event, opened) {
    if (conn.ws !== ws) return;
    conn.ws = null;
    conn.ready = false;
    for (const waiter of conn.waiting.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(Object.assign(new Error("disconnected"), { code: "disconnected" }));
    }
    conn.waiting.clear();
    state.focusedId = null;
    clearTyping();
    state.presence.clear(); // unknown until the next presence:query
    for (const send of state.pending.values()) if (send.state === "sending") send.state = "queued";
    scheduleRender();
    if (!state.token) return;
    if (event.code === 1008 && event.reason === "token_expired") {
      signOut("Your session expired: sign in again.");
      return;
    }
    if (event.code === 1009) notice("The server refused an oversized frame; reconnecting.");
    if (!opened || event.code === 1008) {
      // A refused upgrade (HTTP 401) looks like any failed connection from here, and a policy
      // close may be a revoked token or a slow connection: ask REST whether the token is
      // still good (a 401 there signs out), else reconnect.
      try {
        await api("GET", "/api/unread");
      } catch {
        if (!state.token) return;
      }
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (!state.token || conn.ws || conn.timer) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** conn.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2); // "equal jitter"
    conn.attempt += 1;
    setStatus("offline", `offline, retry in ${Math.max(1, Math.round(delay / 1000))} s`);
    conn.timer = setTimeout(() => {
      conn.timer = null;
      connect();
    }, delay);
  }

  /** Sends `event` and resolves its ack's payload when `ok`; throws Error with `.code`. */
  function call(event, data) {
    return new Promise((resolve, reject) => {
      const ws = conn.ws;
      if (!ws || !conn.ready || ws.readyState !== WebSocket.OPEN) {
        reject(Object.assign(new Error("not connected"), { code: "disconnected" }));
        return;
      }
      const id = conn.nextId++;
      const timer = setTimeout(() => {
        conn.waiting.delete(id);
        reject(Object.assign(new Error(`${event}: no answer`), { code: "timeout" }));
      }, ACK_TIMEOUT_MS);
      conn.waiting.set(id, {
        timer,
        reject,
        resolve: (ack) => {
          if (ack && ack.ok) resolve(ack);
          else reject(Object.assign(new Error(ack?.error?.message || `${event} failed`), { code: ack?.error?.code || "error" }));
        },
      });
      ws.send(JSON.stringify({ id, event, data }));
    });
  }

  /** `call` for fire-and-forget events: a failure is only logged. */
  function tell(event, data) {
    call(event, data).catch((err) => {
      if (err.code !== "disconnected") console.warn(event, err.code, err.message);
    });
  }

  function onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      console.warn("unparsable frame", text);
      return;
    }
    if (frame && frame.id !== undefined && frame.ack !== undefined) {
      const waiter = conn.waiting.get(frame.id);
      if (waiter) {
        conn.waiting.delete(frame.id);
        clearTimeout(waiter.timer);
        waiter.resolve(frame.ack);
      }
      return;
    }
    if (frame && typeof frame.event === "string") onEvent(frame.event, frame.data || {});
  }

  function setStatus(kind, text) {
    const el = $("status");
    el.dataset.state = kind;
    $("status-text").textContent = text;
  }

  // ---------------------------------------------------------------------------------------
  // Server events

  function onEvent(event, data) {
    switch (event) {
      case "ready":
        onReady(data);
        break;
      case "message:new":
        applyMessage(data, true);
        break;
      case "message:updated":
      case "message:deleted":
      case "message:pinned":
      case "message:unpinned":
      case "thread:updated":
        applyMessage(data, false);
        break;
      case "sync:required":
        catchUpAgain(data.conversations || []);
        break;
      case "reaction:added":
      case "reaction:removed":
        applyReaction(data);
        break;
      case "message:read":
        applyRead(data.conversation_id, data.user_id, data.seq);
        break;
      case "typing:start":
        setTyping(data.conversation_id, data.user_id, true);
        break;
      case "typing:stop":
        setTyping(data.conversation_id, data.user_id, false);
        break;
      case "user:online":
        state.presence.set(data.user_id, { online: true, last_seen_at: null });
        scheduleRender();
        break;
      case "user:offline":
        state.presence.set(data.user_id, { online: false, last_seen_at: data.last_seen_at || null });
        scheduleRender();
        break;
      case "notification":
        onNotification(data);
        break;
      case "conversation:new":
        upsertConversation(data, { fresh: true });
        break;
      case "conversation:updated":
        upsertConversation(data, { fresh: false });
        break;
      case "error":
        notice(`${data.event || "request"} failed: ${data.message || data.code}`);
        break;
      default:
        break; // newer servers may add events
    }
  }

  /** After every (re)connect: catch up, then tell the server where we are, then resend. */
  async function onReady(ready) {
    const ws = conn.ws;
    const current = () => conn.ws === ws && state.token;
    conn.ready = true;
    conn.attempt = 0;
    if (!state.me && ready.user_id) state.me = ready.user_id;
    setStatus("syncing", "syncing…");
    try {
      await catchUp(ready.conversations || []);
      if (!current()) return;
      setStatus("online", "online");
      updateFocus();
      markRead();
      queryPresence();
      flushPending();
      refreshAfterReconnect();
    } catch (err) {
      if (!current()) return;
      console.warn("catch-up failed", err);
      setStatus("online", "online");
      notice("Could not catch up with missed messages; reload to be sure.");
    }
  }

  /**
   * `sync` from what we have seen, page by page, until `has_more` is false. Messages are
   * merged by seq, so nothing shows twice.
   */
  async function catchUp(heads) {
    const since = {};
    // Loaded chats also ask for the messages they hold that changed meanwhile (reactions,
    // pins, edits, thread summaries: protocol.md, "Catching up on changes").
    const revisions = {};
    for (const head of heads) {
      const conv = state.conversations.get(head.id);
      const chat = state.chats.get(head.id);
      if (chat && chat.loaded) {
        since[head.id] = chat.top;
        if (chat.top > 0) revisions[head.id] = chat.revision;
      } else if (conv) since[head.id] = Math.min(conv.last_seq || 0, head.last_seq);
      else since[head.id] = head.last_seq; // not on screen yet: the list refresh brings it
      if (typeof head.last_revision === "number") state.heads.set(head.id, head.last_revision);
    }
    for (let round = 0; round < 100; round++) {
      const page = await call("sync", { conversations: since, revisions });
      for (const message of page.changed || []) {
        const id = message.conversation_id;
        if (id in revisions) revisions[id] = Math.max(revisions[id], message.revision || 0);
        applyMessage(message, false);
      }
      for (const message of page.messages || []) {
        since[message.conversation_id] = Math.max(since[message.conversation_id] || 0, message.seq);
        applyMessage(message, false);
      }
      if (!page.has_more) {
        for (const head of page.conversations || []) {
          const chat = state.chats.get(head.id);
          if (head.id in revisions && chat && typeof head.last_revision === "number") chat.revision = head.last_revision;
        }
        return;
      }
    }
  }

  /** `sync:required`: the server may have missed events for us; catch up (one run at a time). */
  let catchingUp = Promise.resolve();
  function catchUpAgain(heads) {
    catchingUp = catchingUp
      .then(() => (conn.ready ? catchUp(heads) : null))
      .catch((err) => {
        if (err.code !== "disconnected") console.warn("catch-up failed", err);
      });
  }

  /** After a reconnect: unread badges, new conversations and edits made while away. */
  async function refreshAfterReconnect() {
    try {
      const unread = await api("GET", "/api/unread");
      for (const conv of state.conversations.values()) {
        if (conv.id === state.openId && document.visibilityState === "visible") continue;
        conv.unread_count = unread.conversations?.[conv.id] || 0;
      }
      const first = await api("GET", `/api/conversations?limit=${LIST_PAGE}`);
      for (const conv of first.conversations) upsertConversation(conv, { fresh: false, keepUnread: true });
      if (state.openId) {
        const id = state.openId;
        const conv = await api("GET", `/api/conversations/${encodeURIComponent(id)}`);
        upsertConversation(conv, { fresh: false, keepUnread: true });
        const chat = state.chats.get(id);
        if (chat && chat.loaded) {
          const page = await api("GET", `/api/conversations/${encodeURIComponent(id)}/messages?limit=${PAGE}`);
          for (const message of page.messages) addToChat(chat, message);
        }
      }
      scheduleRender();
    } catch (err) {
      if (err.code !== "stale") console.warn("refresh failed", err);
    }
  }

  function onNotification(data) {
    const conv = state.conversations.get(data.conversation_id);
    if (!conv) {
      fetchConversation(data.conversation_id);
      return;
    }
    if (data.conversation_id === state.openId && document.visibilityState === "visible") {
      markRead();
      return;
    }
    if (typeof data.unread_count === "number") conv.unread_count = data.unread_count;
    else conv.unread_count = (conv.unread_count || 0) + 1;
    scheduleRender();
  }

  // ---------------------------------------------------------------------------------------
  // Conversations

  function member(conv, userId) {
    return (conv?.members || []).find((m) => m.user_id === userId);
  }

  function otherMembers(conv) {
    return (conv?.members || []).filter((m) => m.user_id !== state.me);
  }

  function peer(conv) {
    return conv.type === "direct" ? otherMembers(conv)[0]?.user_id || state.me : null;
  }

  function conversationName(conv) {
    if (conv.type === "direct") return peer(conv);
    if (conv.name) return conv.name;
    return otherMembers(conv).map((m) => m.user_id).join(", ") || "group";
  }

  function activity(conv) {
    return conv.last_message_at || conv.created_at || "";
  }

  /** Merges a conversation from the server into the list. */
  function upsertConversation(incoming, { fresh, keepUnread = !fresh } = {}) {
    if (!incoming || !incoming.id) return;
    const old = state.conversations.get(incoming.id);
    if (state.me && !member(incoming, state.me) && incoming.members) {
      // We were removed from it.
      state.conversations.delete(incoming.id);
      state.chats.delete(incoming.id);
      if (state.openId === incoming.id) closeChat();
      scheduleRender();
      return;
    }
    const conv = { ...incoming };
    if (old) {
      // Keep what we learned live when the copy is older than that.
      if ((old.last_seq || 0) > (conv.last_seq || 0)) {
        conv.last_seq = old.last_seq;
        conv.last_message = old.last_message;
        conv.last_message_at = old.last_message_at;
      }
      if (keepUnread) conv.unread_count = old.unread_count; // the payload's is the actor's
      for (const m of conv.members || []) {
        const before = member(old, m.user_id);
        if (before && (before.last_read_seq || 0) > (m.last_read_seq || 0)) m.last_read_seq = before.last_read_seq;
      }
    }
    state.conversations.set(conv.id, conv);
    if (!old && conv.type === "direct") queryPresence([peer(conv)]);
    scheduleRender();
  }

  const fetching = new Set();
  async function fetchConversation(id) {
    if (fetching.has(id)) return;
    fetching.add(id);
    try {
      upsertConversation(await api("GET", `/api/conversations/${encodeURIComponent(id)}`), { fresh: false, keepUnread: false });
    } catch (err) {
      if (err.code !== "stale") console.warn("conversation", id, err.code);
    } finally {
      fetching.delete(id);
    }
  }

  async function loadConversations(more) {
    const cursor = more && state.nextCursor ? `&cursor=${encodeURIComponent(state.nextCursor)}` : "";
    try {
      const page = await api("GET", `/api/conversations?limit=${LIST_PAGE}${cursor}`);
      for (const conv of page.conversations) upsertConversation(conv, { fresh: false, keepUnread: false });
      state.nextCursor = page.next_cursor || null;
      state.listLoaded = true;
      queryPresence();
      scheduleRender();
    } catch (err) {
      if (err.code !== "stale") notice(`Could not load conversations: ${err.message}`);
    }
  }

  /** Asks for the presence of direct-chat peers (all of them, or `ids`). */
  function queryPresence(ids) {
    if (!conn.ready) return; // done again on `ready`
    const wanted = ids || [...state.conversations.values()].filter((c) => c.type === "direct").map(peer);
    const userIds = [...new Set(wanted.filter((id) => id && id !== state.me))].slice(0, 500);
    if (!userIds.length) return;
    call("presence:query", { user_ids: userIds })
      .then((ack) => {
        for (const [id, info] of Object.entries(ack.presence || {})) state.presence.set(id, info);
        scheduleRender();
      })
      .catch((err) => console.warn("presence", err.code));
  }

  async function createConversation(body) {
    try {
      const conv = await api("POST", "/api/conversations", body);
      upsertConversation(conv, { fresh: false, keepUnread: false });
      $("new-panel").hidden = true;
      $("new-chat").setAttribute("aria-expanded", "false");
      openChat(conv.id);
      return true;
    } catch (err) {
      if (err.code !== "stale") notice(`Could not start the chat: ${err.message}`);
      return false;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Messages

  /** Of two versions of one message, the later (a delete wins, then the later edit). */
  /** Of two states of one message, the later: the higher `version` (protocol.md, Message). */
  function newer(a, b) {
    if (!a) return b;
    return (a.version || 0) > (b.version || 0) ? a : b;
  }

  function addToChat(chat, message) {
    chat.messages.set(message.seq, newer(chat.messages.get(message.seq), message));
    if (!chat.loaded) return;
    while (chat.messages.has(chat.top + 1)) chat.top += 1;
  }

  /** A message from an event, an ack, `sync` or REST. `live`: a `message:new`. */
  function applyMessage(message, live) {
    if (!message || !message.conversation_id || typeof message.seq !== "number") return;
    const id = message.conversation_id;
    const conv = state.conversations.get(id);
    if (!conv) {
      fetchConversation(id);
    } else if (message.seq > (conv.last_seq || 0)) {
      conv.last_seq = message.seq;
      if (!threadOnly(message)) {
        // A thread-only reply is not on the timeline, so not the list's preview either.
        conv.last_message = message;
        conv.last_message_at = message.created_at;
      }
    } else if (conv.last_message ? conv.last_message.id === message.id : message.seq === conv.last_seq && !threadOnly(message)) {
      conv.last_message = newer(conv.last_message, message);
    }
    const chat = state.chats.get(id);
    if (chat) {
      addToChat(chat, message);
      if (chat.loaded && maxSeq(chat) > chat.top) fillGap(id);
    }
    const thread = state.thread;
    if (thread && thread.conversationId === id) {
      if (message.id === thread.rootId) thread.root = newer(thread.root, message);
      else if (message.thread_id === thread.rootId) thread.replies.set(message.seq, newer(thread.replies.get(message.seq), message));
    }
    if (state.pins && state.pins.conversationId === id) applyPin(state.pins, message);
    if (message.sender_id === state.me && message.client_id) {
      const send = state.pending.get(message.client_id);
      if (send && send.conversation_id === id) forgetPending(message.client_id);
    }
    if (live) {
      setTyping(id, message.sender_id, false);
      if (id === state.openId) markRead();
    }
    scheduleRender();
  }

  /** A reply shown only in its thread (protocol.md, "Threads"), never on the timeline. */
  function threadOnly(message) {
    return !!message.thread_id && !message.also_in_conversation;
  }

  /** A `reaction:added` / `reaction:removed`: the whole message rides along (`message`). */
  function applyReaction(data) {
    if (data.message) {
      applyMessage(data.message, false);
      return;
    }
    // Older servers sent only the counts: patch what we hold when the event is newer.
    const held = findMessage(data.conversation_id, data.message_id);
    if (!held || (data.version || 0) <= (held.version || 0)) return;
    applyMessage(
      {
        ...held,
        reaction_counts: data.reaction_counts || {},
        latest_reactions: data.latest_reactions || [],
        version: data.version,
        revision: data.revision ?? held.revision,
      },
      false,
    );
  }

  /** A message we hold, by id (in its chat, or in the open thread). */
  function findMessage(conversationId, messageId) {
    const chat = state.chats.get(conversationId);
    for (const message of chat?.messages.values() || []) if (message.id === messageId) return message;
    const thread = state.thread;
    if (thread && thread.conversationId === conversationId) {
      if (thread.root?.id === messageId) return thread.root;
      for (const message of thread.replies.values()) if (message.id === messageId) return message;
    }
    return null;
  }

  function maxSeq(chat) {
    let max = 0;
    for (const seq of chat.messages.keys()) if (seq > max) max = seq;
    return max;
  }

  /** Loads what is missing between `top` and the newest message we hold (a seq gap). */
  async function fillGap(id) {
    const chat = state.chats.get(id);
    if (!chat || chat.fillingGap) return;
    chat.fillingGap = true;
    try {
      while (maxSeq(chat) > chat.top) {
        const from = chat.top;
        const page = await api("GET", `/api/conversations/${encodeURIComponent(id)}/messages?after_seq=${from}&limit=100`);
        for (const message of page.messages) addToChat(chat, message);
        if (chat.top === from) break; // the server has nothing more here
      }
    } catch (err) {
      if (err.code !== "stale") console.warn("gap", err.code);
    } finally {
      chat.fillingGap = false;
      scheduleRender();
    }
  }

  async function loadLatest(id) {
    const chat = state.chats.get(id);
    // The head read before loading: what loads next is at least that fresh.
    chat.revision = state.heads.get(id) ?? 0;
    try {
      const page = await api("GET", `/api/conversations/${encodeURIComponent(id)}/messages?limit=${PAGE}`);
      for (const message of page.messages) chat.messages.set(message.seq, newer(chat.messages.get(message.seq), message));
      const newest = page.messages.length ? page.messages[page.messages.length - 1].seq : 0;
      chat.top = newest;
      chat.loaded = true;
      while (chat.messages.has(chat.top + 1)) chat.top += 1;
      chat.hasOlder = page.has_more;
      if (maxSeq(chat) > chat.top) fillGap(id);
      jumpToBottom = true;
      scheduleRender();
      markRead();
    } catch (err) {
      if (err.code === "stale") return;
      state.chats.delete(id);
      notice(`Could not load messages: ${err.message}`);
    }
  }

  async function loadOlder() {
    const id = state.openId;
    const chat = state.chats.get(id);
    if (!chat || !chat.loaded || !chat.hasOlder || chat.loadingOlder) return;
    const oldest = Math.min(...chat.messages.keys());
    chat.loadingOlder = true;
    try {
      const page = await api("GET", `/api/conversations/${encodeURIComponent(id)}/messages?before_seq=${oldest}&limit=${PAGE}`);
      for (const message of page.messages) addToChat(chat, message);
      chat.hasOlder = page.has_more;
    } catch (err) {
      if (err.code !== "stale") notice(`Could not load older messages: ${err.message}`);
    } finally {
      chat.loadingOlder = false;
      scheduleRender();
    }
  }

  function newClientId() {
    if (crypto.randomUUID) return `web-${crypto.randomUUID()}`;
    return `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  }

  function send(conversationId, content) {
    const clientId = newClientId();
    state.pending.set(clientId, { conversation_id: conversationId, content, state: "queued", error: null, at: Date.now() });
    jumpToBottom = true;
    trySend(clientId);
    scheduleRender();
  }

  /**
   * Sends (or re-sends: same client_id, so never twice) one pending message. A file waits
   * until its bytes are uploaded, and until the files picked before it in the same chat are.
   */
  function trySend(clientId) {
    const pending = state.pending.get(clientId);
    if (!pending || pending.state === "sending" || pending.state === "uploading" || !conn.ready) return;
    if (pending.upload && earlierUploadRunning(pending)) return; // flushPending sends it later
    pending.state = "sending";
    pending.error = null;
    const payload = { conversation_id: pending.conversation_id, client_id: clientId };
    if (pending.content) payload.content = pending.content;
    if (pending.upload) {
      payload.type = pending.upload.kind === "image" ? "image" : "file";
      payload.attachments = [{ upload_id: pending.upload.id }];
    }
    call("message:send", payload)
      .then((ack) => {
        forgetPending(clientId);
        applyMessage(ack.message, false);
      })
      .catch((err) => {
        const now = state.pending.get(clientId);
        if (!now) return;
        if (err.code === "disconnected" || err.code === "timeout" || err.code === "unavailable") {
          now.state = "queued"; // resent after the next `ready`
        } else {
          now.state = "failed";
          now.error = err.message;
        }
        scheduleRender();
      });
    scheduleRender();
  }

  function flushPending() {
    const queued = [...state.pending.entries()].filter(([, p]) => p.state === "queued").sort((a, b) => a[1].at - b[1].at);
    for (const [clientId] of queued) trySend(clientId);
  }

  async function editMessage(messageId, content) {
    try {
      const ack = await call("message:edit", { message_id: messageId, content });
      state.editing = null;
      applyMessage(ack.message, false);
    } catch (err) {
      notice(`Could not edit: ${err.message}`);
    }
  }

  async function deleteMessage(messageId) {
    state.confirmDelete = null;
    try {
      const ack = await call("message:delete", { message_id: messageId });
      applyMessage(ack.message, false);
    } catch (err) {
      notice(`Could not delete: ${err.message}`);
    }
    scheduleRender();
  }

  // ---------------------------------------------------------------------------------------
  // Reactions, threads, pins (protocol.md, "Reactions, threads, pins and mentions")

  /** Adds (`on`) or takes back our `emoji` on `message`; the ack carries the message after it. */
  async function react(message, emoji, on) {
    try {
      const ack = await call(on ? "message:react" : "message:unreact", { message_id: message.id, emoji });
      let ours = state.reacted.get(message.id);
      if (!ours) state.reacted.set(message.id, (ours = new Map()));
      ours.set(emoji, on);
      applyMessage(ack.message, false);
    } catch (err) {
      showMessageError(message.id, `Could not ${on ? "react" : "take the reaction back"}: ${err.message}`);
    }
  }

  /** An error shown on the message itself (and as a notice) for a while. */
  function showMessageError(messageId, text) {
    state.messageErrors.set(messageId, text);
    notice(text);
    scheduleRender();
    setTimeout(() => {
      if (state.messageErrors.get(messageId) !== text) return;
      state.messageErrors.delete(messageId);
      scheduleRender();
    }, 8000);
  }

  /** Pins or unpins `message` (REST only); a group member who may not is told so on the message. */
  async function setPinned(message, pin) {
    state.messageErrors.delete(message.id);
    try {
      const updated = await api(pin ? "POST" : "DELETE", `/api/messages/${encodeURIComponent(message.id)}/pin`);
      applyMessage(updated, false);
    } catch (err) {
      if (err.code === "stale") return;
      const text =
        err.status === 403
          ? `Only the group's owner and admins can ${pin ? "pin" : "unpin"} messages.`
          : `Could not ${pin ? "pin" : "unpin"}: ${err.message}`;
      showMessageError(message.id, text);
    }
  }

  /** Opens the thread of `rootId` (`root`: the root when we hold it) in the side panel. */
  async function openThread(conversationId, rootId, root) {
    if (state.thread?.rootId === rootId) {
      $("thread-input").focus();
      return;
    }
    const thread = { conversationId, rootId, root: root || null, replies: new Map(), loading: true, error: null, sending: false };
    const chat = state.chats.get(conversationId);
    for (const message of chat?.messages.values() || []) {
      if (message.thread_id === rootId) thread.replies.set(message.seq, message);
      else if (message.id === rootId) thread.root = newer(thread.root, message);
    }
    state.thread = thread;
    state.picker = null;
    $("thread-input").value = "";
    $("thread-also").checked = false;
    scheduleRender();
    setTimeout(() => $("thread-input").focus(), 0);
    try {
      let after = 0;
      for (let page = 0; page < 50; page++) {
        const answer = await api("GET", `/api/messages/${encodeURIComponent(rootId)}/thread?after_seq=${after}&limit=100`);
        if (state.thread !== thread) return;
        if (answer.root) thread.root = newer(thread.root, answer.root);
        for (const message of answer.messages || []) thread.replies.set(message.seq, newer(thread.replies.get(message.seq), message));
        if (!answer.has_more || !answer.messages?.length) break;
        after = answer.messages[answer.messages.length - 1].seq;
      }
    } catch (err) {
      if (err.code === "stale" || state.thread !== thread) return;
      thread.error = `Could not load the thread: ${err.message}`;
    } finally {
      thread.loading = false;
      scheduleRender();
    }
  }

  function closeThread() {
    if (!state.thread) return;
    state.thread = null;
    scheduleRender();
  }

  /** Sends the thread composer's text as a reply (and to the timeline when the box is ticked). */
  async function sendThreadReply() {
    const thread = state.thread;
    const input = $("thread-input");
    const content = input.value.trim();
    if (!thread || !content || thread.sending) return;
    thread.sending = true;
    thread.error = null;
    scheduleRender();
    // Sending the same text again after a failure reuses its client_id: never sent twice.
    if (thread.attempt?.content !== content) thread.attempt = { content, clientId: newClientId() };
    const payload = {
      conversation_id: thread.conversationId,
      client_id: thread.attempt.clientId,
      content,
      thread_id: thread.rootId,
      also_in_conversation: $("thread-also").checked,
    };
    try {
      const ack = await call("message:send", payload);
      thread.attempt = null;
      if (state.thread === thread && input.value.trim() === content) {
        input.value = "";
        $("thread-also").checked = false;
      }
      applyMessage(ack.message, false);
    } catch (err) {
      thread.error = `Not sent: ${err.message}`;
    } finally {
      thread.sending = false;
      scheduleRender();
    }
  }

  /** Opens the open conversation's pinned messages, or closes them. */
  async function togglePins() {
    const id = state.openId;
    if (!id || state.pins?.conversationId === id) {
      state.pins = null;
      scheduleRender();
      return;
    }
    const pins = { conversationId: id, messages: new Map(), versions: new Map(), loading: true, error: null };
    state.pins = pins;
    scheduleRender();
    try {
      const answer = await api("GET", `/api/conversations/${encodeURIComponent(id)}/pins`);
      if (state.pins !== pins) return;
      for (const message of answer.messages || []) applyPin(pins, message);
    } catch (err) {
      if (err.code === "stale" || state.pins !== pins) return;
      pins.error = `Could not load the pinned messages: ${err.message}`;
    } finally {
      pins.loading = false;
      scheduleRender();
    }
  }

  /**
   * Keeps the pins panel current with one state of a message: the newest state seen of each
   * message decides (an unpin event that beat the list's answer wins over it).
   */
  function applyPin(pins, message) {
    const version = message.version || 0;
    if (version < (pins.versions.get(message.id) || 0)) return;
    pins.versions.set(message.id, version);
    if (message.pinned_at && !message.deleted_at) pins.messages.set(message.id, message);
    else pins.messages.delete(message.id);
  }

  /** Scrolls the timeline to a message (once it is on screen) and flashes it. */
  function revealMessage(messageId) {
    state.reveal = messageId;
    scheduleRender();
  }

  // ---------------------------------------------------------------------------------------
  // Search (protocol.md, "Search"): REST only, results newest first with highlight ranges.

  let searchTimer = null;
  let searchSeq = 0;

  /** Asks the server for `query` (a fresh search), or for the next page (`more`). */
  async function runSearch(query, more = false) {
    clearTimeout(searchTimer);
    const q = query.trim();
    if (!q) {
      closeSearch();
      return;
    }
    const previous = state.search;
    if (more && (!previous || !previous.nextCursor || previous.loading)) return;
    const search = more ? previous : { query: q, results: [], nextCursor: null, loading: true, error: null };
    search.loading = true;
    state.search = search;
    const mine = ++searchSeq;
    scheduleRender();
    try {
      const cursor = more ? `&cursor=${encodeURIComponent(search.nextCursor)}` : "";
      const answer = await api("GET", `/api/search?q=${encodeURIComponent(q)}&limit=${SEARCH_PAGE}${cursor}`);
      if (mine !== searchSeq || state.search !== search) return;
      for (const result of answer.results || []) {
        if (result?.message?.id) search.results.push(result);
        const convId = result?.message?.conversation_id;
        if (convId && !state.conversations.has(convId)) fetchConversation(convId);
      }
      search.nextCursor = answer.next_cursor || null;
      search.error = null;
    } catch (err) {
      if (err.code === "stale" || mine !== searchSeq) return;
      search.error = `Search failed: ${err.message}`;
    } finally {
      if (mine === searchSeq) search.loading = false;
      scheduleRender();
    }
  }

  function closeSearch() {
    clearTimeout(searchTimer);
    searchSeq += 1;
    state.search = null;
    scheduleRender();
  }

  /**
   * `content` as text nodes and <mark> elements, from `[start, end)` ranges counted in Unicode
   * scalar values (Array.from splits a string into them; JS string indexes are UTF-16 units).
   */
  function highlighted(content, ranges) {
    const chars = Array.from(content);
    const clamp = (n) => Math.max(0, Math.min(n, chars.length));
    const spans = (Array.isArray(ranges) ? ranges : [])
      .filter((r) => Array.isArray(r) && Number.isInteger(r[0]) && Number.isInteger(r[1]))
      .map(([start, end]) => [clamp(start), clamp(end)])
      .filter(([start, end]) => end > start)
      .sort((a, b) => a[0] - b[0]);
    // A long text starts a little before its first match, so the match is in view.
    const first = spans.length ? spans[0][0] : 0;
    const lead = chars.length > SNIPPET_CHARS && first > SNIPPET_LEAD ? first - SNIPPET_LEAD : 0;
    const out = lead ? ["…"] : [];
    let at = lead;
    for (const [start, end] of spans) {
      if (end <= at) continue;
      const from = Math.max(start, at);
      if (from > at) out.push(chars.slice(at, from).join(""));
      out.push(h("mark", { dataset: { testid: "search-mark" } }, chars.slice(from, end).join("")));
      at = end;
    }
    if (at < chars.length) out.push(chars.slice(at).join(""));
    return out;
  }

  /** Opens a search result's conversation, its thread when it is a thread-only reply, and shows the message. */
  function openResult(message) {
    openChat(message.conversation_id);
    if (threadOnly(message)) openThread(message.conversation_id, message.thread_id);
    else revealMessage(message.id);
  }

  // ---------------------------------------------------------------------------------------
  // Photos and files: each file is uploaded (POST /api/uploads, then its bytes straight to the
  // storage), then sent as a message of its own naming the upload (protocol.md, "Photos and
  // files"). Until its message is acked it is a pending entry with an `upload`.

  /** Drops a pending entry: stops its upload and frees its local picture. */
  function forgetPending(clientId) {
    const upload = state.pending.get(clientId)?.upload;
    state.pending.delete(clientId);
    if (!upload) return;
    if (upload.xhr) upload.xhr.abort();
    if (upload.previewUrl) URL.revokeObjectURL(upload.previewUrl);
  }

  /** Whether a file picked before `pending`, for the same chat, is still uploading. */
  function earlierUploadRunning(pending) {
    for (const other of state.pending.values()) {
      const earlier = other.conversation_id === pending.conversation_id && other.at < pending.at;
      if (earlier && other.upload && other.state === "uploading") return true;
    }
    return false;
  }

  /** Sends `files` (picked, dropped or pasted) to the open chat; the composer's text becomes the first one's caption. */
  function sendFiles(fileList) {
    const id = state.openId;
    let files = [...(fileList || [])];
    if (!id || !files.length) return;
    if (files.length > MAX_FILES_AT_ONCE) {
      notice(`At most ${MAX_FILES_AT_ONCE} files at a time: sending the first ${MAX_FILES_AT_ONCE}.`);
      files = files.slice(0, MAX_FILES_AT_ONCE);
    }
    const caption = $("composer-input").value.trim();
    if (caption) {
      stopTyping();
      $("composer-input").value = "";
    }
    const now = Date.now();
    files.forEach((file, i) => {
      const type = (file.type || "application/octet-stream").toLowerCase();
      const clientId = newClientId();
      state.pending.set(clientId, {
        conversation_id: id,
        content: i === 0 && caption ? caption : null,
        state: "uploading",
        error: null,
        at: now + i / 1000, // keeps the picked order among messages of the same millisecond
        upload: {
          file,
          name: file.name || "file",
          size: file.size,
          type,
          kind: type.startsWith("image/") ? "image" : "file",
          progress: 0,
          id: null,
          xhr: null,
          previewUrl: PREVIEWABLE.has(type) ? URL.createObjectURL(file) : null,
        },
      });
      startUpload(clientId);
    });
    jumpToBottom = true;
    scheduleRender();
  }

  /** Opens the upload and sends the bytes; then the message goes out (trySend). */
  async function startUpload(clientId) {
    const pending = state.pending.get(clientId);
    if (!pending?.upload) return;
    const upload = pending.upload;
    const current = () => state.pending.get(clientId) === pending;
    pending.state = "uploading";
    pending.error = null;
    upload.progress = 0;
    scheduleRender();
    try {
      const ticket = await api("POST", "/api/uploads", {
        conversation_id: pending.conversation_id,
        filename: upload.name,
        content_type: upload.type,
        size: upload.size,
      });
      if (!current()) return;
      await uploadBytes(ticket, upload, (fraction) => showProgress(clientId, fraction));
      if (!current()) return;
      upload.id = ticket.upload_id;
      upload.progress = 1;
      pending.state = "queued";
    } catch (err) {
      if (err.code === "stale" || !current()) return;
      pending.state = "failed";
      pending.error = err.message;
      notice(`Could not send ${upload.name}: ${err.message}`);
    }
    scheduleRender();
    flushPending();
  }

  /** PUTs the file to chatd (local disk) or POSTs it as a form to the object store (S3), reporting progress. */
  function uploadBytes(ticket, upload, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const post = ticket.method === "POST";
      xhr.open(post ? "POST" : "PUT", ticket.url);
      let body = upload.file;
      if (post) {
        body = new FormData();
        for (const [name, value] of Object.entries(ticket.fields || {})) body.append(name, value);
        body.append("file", upload.file, upload.name);
      } else {
        for (const [name, value] of Object.entries(ticket.headers || {})) xhr.setRequestHeader(name, value);
      }
      const done = (err) => {
        upload.xhr = null;
        if (err) reject(err);
        else resolve();
      };
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total);
      };
      xhr.upload.onload = () => onProgress(1); // every byte sent; the storage's answer is next
      xhr.onload = () => done(xhr.status >= 200 && xhr.status < 300 ? null : uploadRefusal(xhr));
      const unreachable = "the upload failed: the storage could not be reached (network, or it refuses this site)";
      xhr.onerror = () => done(Object.assign(new Error(unreachable), { code: "network" }));
      xhr.onabort = () => done(Object.assign(new Error("upload cancelled"), { code: "stale" }));
      upload.xhr = xhr;
      xhr.send(body);
    });
  }

  /** The storage's reason for refusing an upload: chatd's JSON error, or S3's XML one. */
  function uploadRefusal(xhr) {
    const text = xhr.responseText || "";
    let message = null;
    let code = null;
    try {
      const data = JSON.parse(text);
      message = data?.error?.message;
      code = data?.error?.code;
    } catch {
      const xml = new DOMParser().parseFromString(text, "application/xml");
      message = xml.querySelector("Message")?.textContent;
      code = xml.querySelector("Code")?.textContent;
    }
    const err = new Error(message || `the storage refused the file (HTTP ${xhr.status})`);
    return Object.assign(err, { code: code || `http_${xhr.status}`, status: xhr.status });
  }

  /** Moves a pending upload's progress bar in place (no re-render per progress event). */
  function showProgress(clientId, fraction) {
    const pending = state.pending.get(clientId);
    if (!pending?.upload) return;
    pending.upload.progress = fraction;
    const el = messageCache.get(`p${clientId}`)?.el;
    if (!el) return;
    const percent = Math.round(fraction * 100);
    const bar = el.querySelector("progress");
    if (bar) bar.value = percent;
    const label = el.querySelector(".upload-state");
    if (label) label.textContent = `uploading… ${percent}%`;
  }

  /** 193 B, 4.2 KB, 18 MB. */
  function humanSize(bytes) {
    if (!Number.isFinite(bytes) || bytes < 0) return "";
    if (bytes < 1024) return `${bytes} B`;
    const units = ["KB", "MB", "GB"];
    let value = bytes / 1024;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
  }

  /** An attachment's bytes (or thumbnail) with the token in the query, for <img src> and links. */
  function attachmentUrl(id, thumbnail) {
    const path = `/api/attachments/${encodeURIComponent(id)}${thumbnail ? "/thumbnail" : ""}`;
    return `${path}?token=${encodeURIComponent(state.token)}`;
  }

  /** Server-made attachments (protocol.md, Message); platform-shaped entries are not shown. */
  function mediaOf(message) {
    const serverMade = (a) => a && typeof a.id === "string" && typeof a.kind === "string" && typeof a.content_type === "string";
    return (message.attachments || []).filter(serverMade);
  }

  const dimension = (n) => (Number.isInteger(n) && n > 0 ? n : undefined);

  /** A thumbnail sized from the attachment (no layout jump); a click opens the full image. */
  function photoThumb(attachment) {
    const name = typeof attachment.name === "string" && attachment.name ? attachment.name : "photo";
    return h(
      "button",
      {
        type: "button",
        class: "photo",
        title: `Open ${name}`,
        dataset: { testid: "attachment-image", attachmentId: attachment.id },
        onclick: () => openLightbox(attachment, name),
      },
      h("img", {
        src: attachmentUrl(attachment.id, true),
        alt: name,
        width: dimension(attachment.thumbnail.width),
        height: dimension(attachment.thumbnail.height),
        decoding: "async",
        dataset: { testid: "attachment-thumbnail" },
      }),
    );
  }

  /** What a file chip shows: an icon by kind, the name, the size. */
  function chipParts(kind, name, size) {
    return [
      h("span", { class: "file-icon", "aria-hidden": "true", text: KIND_ICONS[kind] || KIND_ICONS.file }),
      h(
        "span",
        { class: "file-text" },
        h("span", { class: "file-name", dataset: { testid: "attachment-name" }, text: name }),
        h("span", { class: "muted small", dataset: { testid: "attachment-size" }, text: humanSize(size) }),
      ),
    ];
  }

  /** A file to download. */
  function fileChip(attachment) {
    const name = typeof attachment.name === "string" && attachment.name ? attachment.name : "file";
    return h(
      "a",
      {
        class: "file-chip",
        href: attachmentUrl(attachment.id, false),
        download: name,
        title: `Download ${name}`,
        dataset: { testid: "attachment-file", attachmentId: attachment.id, kind: attachment.kind },
      },
      chipParts(attachment.kind, name, attachment.size),
    );
  }

  /** A message's photos and files, or null without any. */
  function attachmentsBlock(message) {
    const media = mediaOf(message);
    if (!media.length) return null;
    return h(
      "div",
      { class: "attachments" },
      media.map((a) => (a.kind === "image" && a.thumbnail ? photoThumb(a) : fileChip(a))),
    );
  }

  let lightbox = null; // {el, opener} while the full image is shown

  /** Shows the full image over the page; a click anywhere or Escape closes it. */
  function openLightbox(attachment, name) {
    closeLightbox();
    const close = h("button", {
      type: "button",
      class: "lightbox-close",
      "aria-label": "Close",
      dataset: { testid: "lightbox-close" },
      text: "×",
    });
    const img = h("img", {
      src: attachmentUrl(attachment.id, false),
      alt: name,
      width: dimension(attachment.width),
      height: dimension(attachment.height),
      dataset: { testid: "lightbox-image" },
    });
    const el = h(
      "div",
      {
        class: "lightbox",
        role: "dialog",
        "aria-modal": "true",
        "aria-label": name,
        dataset: { testid: "lightbox" },
        onclick: closeLightbox,
      },
      close,
      img,
    );
    img.addEventListener("error", () => {
      el.append(h("p", { class: "lightbox-error", role: "alert", text: "The image could not be loaded." }));
    });
    lightbox = { el, opener: document.activeElement };
    document.body.append(el);
    close.focus();
  }

  /** Closes the full image, if shown, and gives the focus back to what opened it. */
  function closeLightbox() {
    if (!lightbox) return;
    const { el, opener } = lightbox;
    lightbox = null;
    el.remove();
    if (opener && opener.isConnected) opener.focus();
  }

  // ---------------------------------------------------------------------------------------
  // Receipts, focus, typing

  function applyRead(conversationId, userId, seq) {
    const conv = state.conversations.get(conversationId);
    const m = member(conv, userId);
    if (!m) return;
    if (seq > (m.last_read_seq || 0)) m.last_read_seq = seq;
    scheduleRender();
  }

  /** Marks the open conversation read up to its newest message, if the tab is visible. */
  function markRead() {
    const id = state.openId;
    const chat = state.chats.get(id);
    const conv = state.conversations.get(id);
    if (!id || !chat || !chat.loaded || !conv || document.visibilityState !== "visible") return;
    const mine = member(conv, state.me);
    const latest = Math.max(chat.top, 0);
    const unreadBadge = conv.unread_count > 0;
    conv.unread_count = 0;
    scheduleRender();
    if (!conn.ready || latest === 0) return;
    if (mine && (mine.last_read_seq || 0) >= latest && !unreadBadge) return;
    call("message:read", { conversation_id: id, seq: latest })
      .then((ack) => applyRead(id, state.me, ack.last_read_seq ?? latest))
      .catch((err) => console.warn("read", err.code));
  }

  /** Tells the server which conversation this tab is looking at, if that changed. */
  function updateFocus() {
    const want = state.openId && document.visibilityState === "visible" && conn.ready ? state.openId : null;
    if (want === state.focusedId || !conn.ready) return;
    state.focusedId = want;
    if (want) tell("conversation:focus", { conversation_id: want });
    else tell("conversation:unfocus", {});
  }

  let typingSentAt = 0;
  let typingIn = null; // conversation we told typing:start for

  function onComposerInput() {
    const id = state.openId;
    if (!id || !$("composer-input").value.trim()) return;
    const now = Date.now();
    if (typingIn === id && now - typingSentAt < TYPING_EVERY_MS) return;
    if (typingIn && typingIn !== id) stopTyping();
    typingIn = id;
    typingSentAt = now;
    if (conn.ready) tell("typing:start", { conversation_id: id });
  }

  function stopTyping() {
    if (!typingIn) return;
    if (conn.ready) tell("typing:stop", { conversation_id: typingIn });
    typingIn = null;
    typingSentAt = 0;
  }

  function setTyping(conversationId, userId, on) {
    if (!conversationId || !userId || userId === state.me) return;
    let typists = state.typing.get(conversationId);
    const timer = typists?.get(userId);
    if (timer) clearTimeout(timer);
    if (on) {
      if (!typists) state.typing.set(conversationId, (typists = new Map()));
      typists.set(userId, setTimeout(() => setTyping(conversationId, userId, false), TYPING_FALLBACK_MS));
    } else if (typists) {
      if (!timer) return;
      typists.delete(userId);
      if (!typists.size) state.typing.delete(conversationId);
    }
    scheduleRender();
  }

  function clearTyping() {
    for (const typists of state.typing.values()) for (const timer of typists.values()) clearTimeout(timer);
    state.typing.clear();
  }

  function typingText(conversationId) {
    const names = [...(state.typing.get(conversationId)?.keys() || [])];
    if (!names.length) return "";
    if (names.length === 1) return `${names[0]} is typing…`;
    if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
    return `${names.length} people are typing…`;
  }

  // ---------------------------------------------------------------------------------------
  // Navigation

  function openChat(id) {
    if (state.openId !== id) {
      stopTyping();
      state.editing = null;
      state.confirmDelete = null;
      state.picker = null;
      state.reveal = null;
      if (state.thread && state.thread.conversationId !== id) state.thread = null;
      if (state.pins && state.pins.conversationId !== id) state.pins = null;
      $("composer-input").value = "";
    }
    state.openId = id;
    $("app").dataset.screen = "chat";
    if (!state.chats.has(id)) {
      state.chats.set(id, newChat());
      loadLatest(id);
    } else {
      jumpToBottom = true;
    }
    updateFocus();
    markRead();
    scheduleRender();
    if (window.matchMedia("(min-width: 641px)").matches) $("composer-input").focus();
  }

  function closeChat() {
    stopTyping();
    state.openId = null;
    state.thread = null;
    state.pins = null;
    $("app").dataset.screen = "list";
    updateFocus();
    scheduleRender();
  }

  document.addEventListener("visibilitychange", () => {
    if (!state.token) return;
    if (document.visibilityState !== "visible") stopTyping();
    updateFocus();
    markRead();
  });

  window.addEventListener("offline", () => {
    if (!state.token) return;
    dropSocket("offline");
  });

  window.addEventListener("online", () => {
    if (!state.token || conn.ws) return;
    conn.attempt = 0;
    connect();
  });

  // ---------------------------------------------------------------------------------------
  // Rendering

  let renderQueued = false;
  let jumpToBottom = false;
  const listCache = new Map();
  const messageCache = new Map();
  let renderedChat = null;

  /** Coalesces renders (not requestAnimationFrame: that stops while the tab is hidden). */
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    setTimeout(() => {
      renderQueued = false;
      if (state.token) render();
    }, 0);
  }

  function render() {
    renderSearch();
    renderList();
    renderChat();
    renderPins();
    renderThread();
  }

  const refillSigs = new WeakMap();
  /** Replaces `el`'s children with `build()`'s, unless `sig` is what it was built from last. */
  function refill(el, sig, build) {
    if (refillSigs.get(el) === sig) return;
    refillSigs.set(el, sig);
    el.replaceChildren(...build());
  }

  /** The thread side panel: the root, its replies (oldest first) and the reply composer. */
  const threadCache = new Map();
  let renderedThread = null;
  function renderThread() {
    const thread = state.thread;
    const panel = $("thread-panel");
    panel.hidden = !thread;
    $("app").classList.toggle("with-thread", !!thread);
    const list = $("thread-items");
    if (renderedThread !== (thread?.rootId ?? null)) {
      list.replaceChildren();
      threadCache.clear();
      renderedThread = thread?.rootId ?? null;
    }
    if (!thread) return;
    const conv = state.conversations.get(thread.conversationId) || { id: thread.conversationId, type: "group", members: [] };
    const items = [];
    if (thread.root) {
      const root = messageItem(conv, thread.root, "root");
      items.push({ ...root, key: `r${thread.root.id}` });
    }
    for (const seq of [...thread.replies.keys()].sort((a, b) => a - b)) items.push(messageItem(conv, thread.replies.get(seq), "reply"));
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const before = list.childElementCount;
    reconcile(list, threadCache, items);
    if (atBottom || list.childElementCount > before) list.scrollTop = list.scrollHeight;
    const count = thread.root?.thread?.reply_count ?? thread.replies.size;
    $("thread-title").textContent = `Thread · ${conversationName(conv)}`;
    let status = "";
    if (thread.error) status = thread.error;
    else if (thread.loading) status = "loading…";
    else status = count ? `${count} ${count === 1 ? "reply" : "replies"}` : "No replies yet";
    const statusEl = $("thread-status");
    statusEl.textContent = status;
    statusEl.classList.toggle("error", !!thread.error);
    const root = thread.root;
    const closed = !root || !!root.deleted_at;
    $("thread-input").disabled = closed;
    $("thread-send").disabled = closed || thread.sending || !conn.ready;
  }

  /** The pinned messages of the open conversation, most recently pinned first. */
  function renderPins() {
    const pins = state.pins;
    const open = !!pins && pins.conversationId === state.openId;
    $("pins-panel").hidden = !open;
    $("pins-toggle").setAttribute("aria-expanded", String(open));
    $("pins-toggle").classList.toggle("active", open);
    if (!open) return;
    const messages = [...pins.messages.values()].sort((a, b) => (a.pinned_at < b.pinned_at ? 1 : a.pinned_at > b.pinned_at ? -1 : 0));
    const status = pins.error || (pins.loading && !messages.length ? "loading…" : messages.length ? "" : "No pinned messages.");
    const sig = JSON.stringify([status, messages.map((m) => [m.id, m.version, m.content])]);
    refill($("pins-items"), sig, () => {
      if (status) return [h("li", { class: `muted pad${pins.error ? " error" : ""}`, dataset: { testid: "pins-status" }, text: status })];
      return messages.map((m) =>
        h(
          "li",
          { class: "pin", dataset: { testid: "pin-item", messageId: m.id, seq: String(m.seq) } },
          h(
            "button",
            {
              type: "button",
              class: "pin-open",
              "aria-label": `Show the message pinned by ${m.pinned_by || "?"}`,
              onclick: () => {
                if (threadOnly(m)) openThread(m.conversation_id, m.thread_id);
                else revealMessage(m.id);
              },
            },
            h("span", { class: "sender", text: m.sender_id }),
            h("span", { class: "pin-text", dataset: { testid: "pin-content" }, text: messagePreview(m) }),
            h("span", { class: "muted small", text: `pinned by ${m.pinned_by || "?"} · ${clockTime(m.pinned_at)}` }),
          ),
          h("button", {
            type: "button",
            class: "link",
            "aria-label": "Unpin this message",
            dataset: { testid: "pin-unpin" },
            onclick: () => setPinned(m, false),
            text: "unpin",
          }),
        ),
      );
    });
  }

  /** The search results (in place of the conversation list while a search is shown). */
  function renderSearch() {
    const search = state.search;
    $("search-results").hidden = !search;
    $("conversations").hidden = !!search;
    $("search-clear").hidden = !search && !$("search-input").value;
    if (!search) return;
    const names = search.results.map((r) => {
      const conv = state.conversations.get(r.message.conversation_id);
      return conv ? conversationName(conv) : r.message.conversation_id;
    });
    let status = "";
    if (search.error) status = search.error;
    else if (search.loading && !search.results.length) status = "searching…";
    else if (!search.results.length) status = `Nothing found for “${search.query}”.`;
    else status = `${search.results.length}${search.nextCursor ? "+" : ""} ${search.results.length === 1 ? "message" : "messages"} for “${search.query}”`;
    const statusEl = $("search-status");
    statusEl.textContent = status;
    statusEl.classList.toggle("error", !!search.error);
    $("search-more").hidden = !search.nextCursor;
    $("search-more").disabled = !!search.loading;
    const sig = JSON.stringify([search.query, search.results.map((r) => [r.message.id, r.message.version]), names, state.openId]);
    refill($("search-items"), sig, () =>
      search.results.map(({ message, highlights }, i) =>
        h(
          "li",
          { class: `result${message.conversation_id === state.openId ? " active" : ""}` },
          h(
            "button",
            {
              type: "button",
              dataset: { testid: "search-result", conversationId: message.conversation_id, messageId: message.id },
              onclick: () => openResult(message),
            },
            h(
              "span",
              { class: "result-head" },
              h("span", { class: "name", dataset: { testid: "search-result-conversation" }, text: names[i] }),
              h("span", { class: "muted small", text: `${message.sender_id} · ${new Date(message.created_at).toLocaleString()}` }),
            ),
            h(
              "span",
              { class: "result-text", dataset: { testid: "search-result-content" } },
              typeof message.content === "string" ? highlighted(message.content, highlights) : "",
            ),
            message.thread_id ? h("span", { class: "muted small", text: "in a thread" }) : null,
          ),
        ),
      ),
    );
  }

  function previewText(conv) {
    const typing = typingText(conv.id);
    if (typing) return { text: typing, typing: true };
    const m = conv.last_message;
    if (!m) return { text: "No messages yet", typing: false };
    const body = m.deleted_at ? "message deleted" : messagePreview(m);
    const who = m.sender_id === state.me ? "You: " : conv.type === "group" ? `${m.sender_id}: ` : "";
    return { text: who + body, typing: false };
  }

  /** Mirrors the server's push preview: the text, else "📷 Photo" for an image, else the file's name. */
  function messagePreview(m) {
    if (typeof m.content === "string" && m.content.trim()) return m.content;
    const first = (m.attachments || [])[0];
    if (first?.kind === "image") return "📷 Photo";
    if (typeof first?.name === "string") return first.name;
    return m.content ?? `[${m.type}]`;
  }

  function renderList() {
    const convs = [...state.conversations.values()].sort((a, b) => (activity(a) < activity(b) ? 1 : activity(a) > activity(b) ? -1 : 0));
    const items = convs.map((conv) => {
      const name = conversationName(conv);
      const preview = previewText(conv);
      const presence = conv.type === "direct" ? state.presence.get(peer(conv)) : null;
      const online = presence ? !!presence.online : null;
      const unread = conv.unread_count || 0;
      const active = conv.id === state.openId;
      const when = conv.last_message_at ? clockTime(conv.last_message_at) : "";
      return {
        key: conv.id,
        sig: JSON.stringify([name, preview, online, unread, active, when, conv.type]),
        build: () =>
          h(
            "li",
            {
              class: `conversation${active ? " active" : ""}`,
              dataset: { testid: "conversation-item", conversationId: conv.id },
            },
            h(
              "button",
              { type: "button", onclick: () => openChat(conv.id) },
              conv.type === "direct"
                ? h("span", {
                    class: `presence ${online ? "on" : "off"}`,
                    title: online ? "online" : "offline",
                    dataset: { testid: "presence-dot", online: String(!!online) },
                  })
                : h("span", { class: "presence group", "aria-hidden": "true", text: "#" }),
              h(
                "span",
                { class: "summary" },
                h("span", { class: "name", dataset: { testid: "conversation-name" }, text: name }),
                h("span", {
                  class: `preview${preview.typing ? " is-typing" : ""}`,
                  dataset: { testid: "conversation-preview" },
                  text: preview.text,
                }),
              ),
              h(
                "span",
                { class: "meta" },
                h("span", { class: "time", text: when }),
                unread > 0
                  ? h("span", {
                      class: "badge",
                      "aria-label": `${unread} unread`,
                      dataset: { testid: "unread-badge" },
                      text: unread > 99 ? "99+" : String(unread),
                    })
                  : null,
              ),
            ),
          ),
      };
    });
    reconcile($("conversations"), listCache, items);
    $("list-empty").hidden = state.conversations.size > 0 || !state.listLoaded;
    $("more-conversations").hidden = !state.nextCursor;
  }

  /** How many other members have read `seq`, and how many there are. */
  function readers(conv, seq) {
    const others = otherMembers(conv);
    return { read: others.filter((m) => (m.last_read_seq || 0) >= seq).length, of: others.length };
  }

  /**
   * One message as a list item. `where`: "timeline" (the chat), "root" (a thread's root, atop
   * the thread panel) or "reply" (a reply in the thread panel).
   */
  function messageItem(conv, message, where = "timeline") {
    const own = message.sender_id === state.me;
    const deleted = !!message.deleted_at;
    const key = `${where}:${message.id}`;
    const editing = state.editing === key && !deleted;
    const confirming = state.confirmDelete === key;
    const receipt = own && !deleted && where === "timeline" ? readers(conv, message.seq) : null;
    const picking = state.picker === key && !deleted;
    const error = state.messageErrors.get(message.id) || null;
    const mine = myReactions(message);
    const sig = JSON.stringify([
      message.id,
      message.content,
      message.edited_at,
      message.deleted_at,
      message.attachments,
      receipt,
      editing,
      confirming,
      message.reaction_counts,
      [...mine],
      message.thread?.reply_count,
      message.pinned_at,
      picking,
      error,
    ]);
    const build = () => {
      const parts = [];
      if (!own && (conv.type === "group" || where !== "timeline")) parts.push(h("span", { class: "sender", text: message.sender_id }));
      const media = deleted ? null : attachmentsBlock(message);
      if (media) parts.push(media);
      if (editing) {
        const input = h("textarea", { class: "edit-input", rows: 2, maxlength: 4000, dataset: { testid: "edit-input" } });
        input.value = message.content ?? "";
        const save = () => {
          const content = input.value.trim();
          if (content && content !== message.content) editMessage(message.id, content);
          else {
            state.editing = null;
            scheduleRender();
          }
        };
        input.addEventListener("keydown", (e) => {
          if (e.key === "Enter" && !e.shiftKey) {
            e.preventDefault();
            save();
          } else if (e.key === "Escape") {
            state.editing = null;
            scheduleRender();
          }
        });
        setTimeout(() => input.focus(), 0);
        parts.push(
          input,
          h(
            "span",
            { class: "actions" },
            h("button", { type: "button", class: "quiet", dataset: { testid: "edit-save" }, onclick: save, text: "Save" }),
            h("button", {
              type: "button",
              class: "quiet",
              dataset: { testid: "edit-cancel" },
              onclick: () => {
                state.editing = null;
                scheduleRender();
              },
              text: "Cancel",
            }),
          ),
        );
      } else if (deleted || message.content != null || !media) {
        parts.push(
          h("span", {
            class: `content${deleted ? " deleted" : ""}`,
            dataset: { testid: "message-content" },
            text: deleted ? "message deleted" : message.content ?? `[${message.type}]`,
          }),
        );
      }
      if (!deleted) parts.push(reactionRow(message, mine, picking));
      const replies = message.thread?.reply_count || 0;
      if (where === "timeline" && replies > 0) {
        parts.push(
          h("button", {
            type: "button",
            class: "link thread-link",
            "aria-label": `Open the thread: ${replies} ${replies === 1 ? "reply" : "replies"}`,
            dataset: { testid: "thread-summary", count: String(replies) },
            onclick: () => openThread(conv.id, message.id, message),
            text: `${replies} ${replies === 1 ? "reply" : "replies"}`,
          }),
        );
      }
      const meta = [h("time", { datetime: message.created_at, text: clockTime(message.created_at) })];
      if (message.pinned_at && !deleted) meta.push(h("span", { class: "pinned", title: `Pinned by ${message.pinned_by || "?"}`, dataset: { testid: "pinned-mark" }, text: "📌 pinned" }));
      if (message.edited_at && !deleted) meta.push(h("span", { class: "edited", dataset: { testid: "edited-mark" }, text: "edited" }));
      if (message.thread_id && message.also_in_conversation && where === "timeline") {
        meta.push(
          h("button", {
            type: "button",
            class: "link",
            "aria-label": "Show this reply in its thread",
            dataset: { testid: "in-thread" },
            onclick: () => openThread(conv.id, message.thread_id),
            text: "in thread",
          }),
        );
      }
      if (receipt) {
        const all = receipt.of > 0 && receipt.read === receipt.of;
        if (all) meta.push(h("span", { class: "receipt read", dataset: { testid: "read-mark" }, text: "✓✓ read" }));
        else if (receipt.read > 0) meta.push(h("span", { class: "receipt", dataset: { testid: "read-mark-partial" }, text: `✓ read by ${receipt.read}` }));
        else meta.push(h("span", { class: "receipt", dataset: { testid: "sent-mark" }, text: "✓ sent" }));
      }
      if (!deleted && !editing) {
        meta.push(
          h("button", {
            type: "button",
            class: "link",
            "aria-label": "Add a reaction",
            "aria-expanded": String(picking),
            dataset: { testid: "react-button" },
            onclick: () => {
              state.picker = picking ? null : key;
              scheduleRender();
            },
            text: "react",
          }),
        );
        if (where === "timeline" && !message.thread_id) {
          meta.push(
            h("button", {
              type: "button",
              class: "link",
              "aria-label": "Reply in thread",
              dataset: { testid: "reply-in-thread" },
              onclick: () => openThread(conv.id, message.id, message),
              text: "reply",
            }),
          );
        }
        if (where !== "reply") {
          const pinned = !!message.pinned_at;
          meta.push(
            h("button", {
              type: "button",
              class: "link",
              "aria-label": pinned ? "Unpin this message" : "Pin this message",
              dataset: { testid: pinned ? "unpin-button" : "pin-button" },
              onclick: () => setPinned(message, !pinned),
              text: pinned ? "unpin" : "pin",
            }),
          );
        }
      }
      if (own && !deleted && !editing) {
        meta.push(
          h("button", {
            type: "button",
            class: "link",
            dataset: { testid: "edit-button" },
            onclick: () => {
              state.editing = key;
              state.confirmDelete = null;
              scheduleRender();
            },
            text: "edit",
          }),
          h("button", {
            type: "button",
            class: `link${confirming ? " danger" : ""}`,
            dataset: { testid: "delete-button" },
            onclick: () => {
              if (confirming) deleteMessage(message.id);
              else {
                state.confirmDelete = key;
                scheduleRender();
              }
            },
            text: confirming ? "delete? click again" : "delete",
          }),
        );
      }
      parts.push(h("span", { class: "meta" }, meta));
      if (error) parts.push(h("span", { class: "error small", role: "alert", dataset: { testid: "message-error" }, text: error }));
      const testid = where === "timeline" ? "message" : where === "root" ? "thread-root" : "thread-reply";
      return h(
        "li",
        {
          class: `message${own ? " own" : ""}${deleted ? " is-deleted" : ""}${message.pinned_at && !deleted ? " is-pinned" : ""}`,
          dataset: { testid, seq: String(message.seq), messageId: message.id, own: String(own) },
        },
        parts,
      );
    };
    return { key: `s${message.seq}`, sig, build };
  }

  /** The emoji the caller has put on `message` (read from `latest_reactions` and our own acks). */
  function myReactions(message) {
    const mine = new Set();
    const latest = Array.isArray(message.latest_reactions) ? message.latest_reactions : [];
    for (const r of latest) if (r && r.user_id === state.me && typeof r.emoji === "string") mine.add(r.emoji);
    // Past the newest 10 the list no longer names us: trust what our own acks said.
    const counts = message.reaction_counts || {};
    for (const [emoji, on] of state.reacted.get(message.id) || []) {
      if (on && latest.length >= 10 && counts[emoji] > 0) mine.add(emoji);
    }
    return mine;
  }

  /** A message's reaction chips (click: toggle ours) and, while open, the quick-reaction picker; null with neither. */
  function reactionRow(message, mine, picking) {
    const counts = Object.entries(message.reaction_counts || {}).filter(([, n]) => Number.isInteger(n) && n > 0);
    const chips = counts.map(([emoji, n]) => {
      const ours = mine.has(emoji);
      return h("button", {
        type: "button",
        class: `reaction${ours ? " mine" : ""}`,
        "aria-pressed": String(ours),
        "aria-label": `${emoji} ${n}${ours ? ", yours: click to take it back" : ": click to add yours"}`,
        title: ours ? "You reacted: click to take it back" : "Click to react too",
        dataset: { testid: "reaction-chip", emoji, count: String(n), mine: String(ours) },
        onclick: () => react(message, emoji, !ours),
        text: `${emoji} ${n}`,
      });
    });
    const picker = picking
      ? h(
          "span",
          { class: "picker", role: "group", "aria-label": "Quick reactions", dataset: { testid: "reaction-picker" } },
          QUICK_REACTIONS.map((emoji) =>
            h("button", {
              type: "button",
              class: `pick${mine.has(emoji) ? " mine" : ""}`,
              "aria-label": `React with ${emoji}`,
              dataset: { testid: "reaction-option", emoji },
              onclick: () => {
                state.picker = null;
                react(message, emoji, true);
              },
              text: emoji,
            }),
          ),
        )
      : null;
    if (!chips.length && !picker) return null;
    return h("span", { class: "reactions", dataset: { testid: "reactions" } }, chips, picker);
  }

  /** What a pending file shows: its picture (or a chip), and its progress bar while uploading. */
  function pendingUpload(pending) {
    const upload = pending.upload;
    const parts = [];
    if (upload.previewUrl) parts.push(h("img", { class: "pending-photo", src: upload.previewUrl, alt: upload.name }));
    else parts.push(h("span", { class: "file-chip" }, chipParts(upload.kind, upload.name, upload.size)));
    if (pending.state === "uploading") {
      parts.push(
        h("progress", {
          class: "upload-progress",
          max: 100,
          value: Math.round(upload.progress * 100),
          "aria-label": `Uploading ${upload.name}`,
          dataset: { testid: "upload-progress" },
        }),
      );
    }
    return parts;
  }

  function pendingItem(clientId, pending) {
    const failed = pending.state === "failed";
    const uploading = pending.state === "uploading";
    const upload = pending.upload;
    const status = failed
      ? h("span", { class: "error", role: "alert", dataset: { testid: "pending-error" }, text: `not sent: ${pending.error}` })
      : h("span", { class: "upload-state", text: uploading ? `uploading… ${Math.round(upload.progress * 100)}%` : "sending…" });
    const retry = () => {
      if (upload && !upload.id) startUpload(clientId);
      else {
        pending.state = "queued";
        trySend(clientId);
      }
    };
    const discard = () => {
      forgetPending(clientId);
      scheduleRender();
    };
    return {
      key: `p${clientId}`,
      sig: JSON.stringify([pending.state, pending.error]),
      build: () =>
        h(
          "li",
          {
            class: `message own pending${failed ? " failed" : ""}`,
            dataset: upload ? { testid: "pending-message", clientId, upload: upload.kind } : { testid: "pending-message", clientId },
          },
          upload ? pendingUpload(pending) : null,
          pending.content ? h("span", { class: "content", text: pending.content }) : null,
          h(
            "span",
            { class: "meta" },
            status,
            failed
              ? h("button", { type: "button", class: "link", dataset: { testid: "pending-retry" }, onclick: retry, text: "retry" })
              : null,
            failed || uploading
              ? h("button", {
                  type: "button",
                  class: "link",
                  dataset: { testid: "pending-discard" },
                  onclick: discard,
                  text: failed ? "discard" : "cancel",
                })
              : null,
          ),
        ),
    };
  }

  function renderChat() {
    const id = state.openId;
    const conv = id ? state.conversations.get(id) : null;
    const chat = id ? state.chats.get(id) : null;
    $("chat-empty").hidden = !!conv;
    $("chat-bar").hidden = !conv;
    $("messages").hidden = !conv;
    $("composer").hidden = !conv;
    $("chat").dataset.conversationId = conv ? conv.id : "";
    const list = $("message-items");
    if (renderedChat !== id) {
      list.replaceChildren();
      messageCache.clear();
      renderedChat = id;
      jumpToBottom = true;
    }
    if (!conv) {
      $("typing").textContent = "";
      return;
    }
    $("chat-title").textContent = conversationName(conv);
    let sub = "";
    if (conv.type === "direct") {
      const presence = state.presence.get(peer(conv));
      if (presence?.online) sub = "online";
      else if (presence?.last_seen_at) sub = `last seen ${new Date(presence.last_seen_at).toLocaleString()}`;
    } else {
      sub = `${(conv.members || []).length} members`;
    }
    $("chat-sub").textContent = sub;
    $("typing").textContent = typingText(id);

    const box = $("messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    const fromBottom = box.scrollHeight - box.scrollTop;
    const firstBefore = list.firstChild;

    const items = [];
    if (chat) {
      for (const seq of [...chat.messages.keys()].sort((a, b) => a - b)) {
        const message = chat.messages.get(seq);
        if (!threadOnly(message)) items.push(messageItem(conv, message));
      }
    }
    for (const [clientId, pending] of state.pending) {
      if (pending.conversation_id === id) items.push(pendingItem(clientId, pending));
    }
    reconcile(list, messageCache, items);
    $("load-older").hidden = !(chat && chat.loaded && chat.hasOlder);
    $("load-older").disabled = !!chat?.loadingOlder;

    if (jumpToBottom || atBottom) box.scrollTop = box.scrollHeight;
    else if (firstBefore && list.firstChild !== firstBefore) box.scrollTop = box.scrollHeight - fromBottom;
    if (chat && chat.loaded) jumpToBottom = false;
    if (state.reveal) {
      const el = [...list.children].find((li) => li.dataset.messageId === state.reveal);
      if (el) {
        state.reveal = null;
        el.scrollIntoView({ block: "center" });
        el.classList.add("flash");
        setTimeout(() => el.classList.remove("flash"), 2000);
      }
    }
    // A first page that does not fill the screen cannot be scrolled up: fetch more now.
    if (chat && chat.loaded && chat.hasOlder && box.scrollHeight <= box.clientHeight) loadOlder();
  }

  // ---------------------------------------------------------------------------------------
  // Sign-in and sign-out

  function showSignIn(message) {
    $("app").hidden = true;
    $("signin").hidden = false;
    const error = $("signin-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("dev-user").focus();
  }

  function start(token) {
    const session = state.session + 1;
    state = freshState();
    state.session = session;
    state.token = token;
    const c = claims(token) || {};
    state.me = typeof c.sub === "string" ? c.sub : null;
    state.myName = typeof c.name === "string" ? c.name : null;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("jwt").value = "";
    $("search-input").value = "";
    listCache.clear();
    $("conversations").replaceChildren();
    renderedChat = undefined;
    $("signin").hidden = true;
    $("app").hidden = false;
    $("app").dataset.screen = "list";
    $("me").textContent = state.myName ? `${state.myName} (${state.me})` : state.me || "";
    conn.attempt = 0;
    scheduleRender();
    loadConversations(false).then(connect);
  }

  function signOut(message) {
    stopTyping();
    closeLightbox();
    for (const clientId of [...state.pending.keys()]) forgetPending(clientId);
    const session = state.session + 1;
    state.token = null;
    dropSocket("signed out");
    clearTimeout(conn.timer);
    conn.timer = null;
    clearTyping();
    state = freshState();
    state.session = session;
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(message);
  }

  $("dev-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const userId = $("dev-user").value.trim();
    const name = $("dev-name").value.trim();
    if (!userId) return;
    try {
      const body = name ? { user_id: userId, name } : { user_id: userId };
      const { token } = await api("POST", "/api/dev/token", body, { auth: false });
      start(token);
    } catch (err) {
      if (err.status === 404) {
        showSignIn("This server does not hand out dev tokens (it runs without --dev). Paste a JWT below.");
        $("jwt-box").open = true;
        $("jwt").focus();
      } else {
        showSignIn(`Sign-in failed: ${err.message}`);
      }
    }
  });

  $("jwt-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("jwt").value.trim();
    const c = claims(token);
    if (!c || typeof c.sub !== "string") {
      showSignIn("That does not look like a JWT (three base64url parts with a `sub`).");
      return;
    }
    if (tokenExpired(token)) {
      showSignIn("That token has expired.");
      return;
    }
    state.token = token; // checked with a real request before we switch screens
    try {
      await api("GET", "/api/unread");
      start(token);
    } catch (err) {
      state.token = null;
      showSignIn(`The server refused the token: ${err.message}`);
    }
  });

  $("signout").addEventListener("click", () => signOut());
  $("back").addEventListener("click", closeChat);
  $("more-conversations").addEventListener("click", () => loadConversations(true));
  $("load-older").addEventListener("click", loadOlder);
  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop < 60) loadOlder();
  });

  $("new-chat").addEventListener("click", () => {
    const panel = $("new-panel");
    panel.hidden = !panel.hidden;
    $("new-chat").setAttribute("aria-expanded", String(!panel.hidden));
    if (!panel.hidden) $("direct-user").focus();
  });

  $("new-direct").addEventListener("submit", async (event) => {
    event.preventDefault();
    const other = $("direct-user").value.trim();
    if (!other) return;
    if (await createConversation({ type: "direct", members: [other] })) $("direct-user").value = "";
  });

  $("new-group").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("group-name").value.trim();
    const members = [...new Set($("group-members").value.split(",").map((s) => s.trim()).filter(Boolean))];
    if (!name || !members.length) return;
    if (await createConversation({ type: "group", name, members })) {
      $("group-name").value = "";
      $("group-members").value = "";
    }
  });

  const composer = $("composer-input");
  composer.addEventListener("input", onComposerInput);
  composer.addEventListener("blur", stopTyping);
  composer.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  composer.addEventListener("paste", (event) => {
    const files = event.clipboardData?.files;
    if (!files?.length || !state.openId) return;
    event.preventDefault();
    sendFiles(files);
  });
  $("attach").addEventListener("click", () => $("attach-input").click());
  $("attach-input").addEventListener("change", (event) => {
    sendFiles(event.target.files);
    event.target.value = ""; // picking the same file again is a new change
  });

  // Files dragged onto the chat are sent to it; dropped anywhere else they are ignored (the
  // browser would otherwise leave the page to show them).
  const carriesFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  let dragDepth = 0;
  const showDropHint = (on) => {
    dragDepth = on ? dragDepth + 1 : 0;
    $("drop-hint").hidden = !on;
  };
  $("chat").addEventListener("dragenter", (event) => {
    if (!state.openId || !carriesFiles(event)) return;
    event.preventDefault();
    showDropHint(true);
  });
  $("chat").addEventListener("dragover", (event) => {
    if (!state.openId || !carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  $("chat").addEventListener("dragleave", (event) => {
    if (!carriesFiles(event) || --dragDepth > 0) return;
    showDropHint(false);
  });
  $("chat").addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    showDropHint(false);
    sendFiles(event.dataTransfer.files);
  });
  window.addEventListener("dragover", (event) => {
    if (!carriesFiles(event) || event.defaultPrevented) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "none";
  });
  window.addEventListener("drop", (event) => {
    if (carriesFiles(event)) event.preventDefault();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if (lightbox) {
      event.preventDefault();
      closeLightbox();
    } else if (state.picker) {
      state.picker = null;
      scheduleRender();
    } else if (state.pins) {
      state.pins = null;
      scheduleRender();
    } else if (state.thread && $("thread-panel").contains(document.activeElement)) {
      closeThread();
    }
  });

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const content = composer.value.trim();
    if (!content || !state.openId) return;
    stopTyping();
    composer.value = "";
    send(state.openId, content);
  });

  $("thread-close").addEventListener("click", closeThread);
  $("thread-composer").addEventListener("submit", (event) => {
    event.preventDefault();
    sendThreadReply();
  });
  $("thread-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("thread-composer").requestSubmit();
    }
  });
  $("pins-toggle").addEventListener("click", togglePins);
  $("pins-close").addEventListener("click", () => {
    state.pins = null;
    scheduleRender();
  });

  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch($("search-input").value);
  });
  $("search-input").addEventListener("input", () => {
    clearTimeout(searchTimer);
    const value = $("search-input").value;
    if (!value.trim()) {
      if (state.search) closeSearch();
      else scheduleRender();
      return;
    }
    searchTimer = setTimeout(() => runSearch(value), SEARCH_DELAY_MS);
    scheduleRender();
  });
  $("search-clear").addEventListener("click", () => {
    $("search-input").value = "";
    closeSearch();
    $("search-input").focus();
  });
  $("search-more").addEventListener("click", () => runSearch(state.search?.query || "", true));

  // ---------------------------------------------------------------------------------------
  // Boot

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved && !tokenExpired(saved)) start(saved);
  else {
    if (saved) sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(saved ? "Your session expired: sign in again." : "");
  }
})();
