// Drives chatd's bundled web page (GET /) in headless Chromium, one scenario per run:
//   CHATD_URL=http://127.0.0.1:PORT CHATD_SECRET=... CHATD_SCREENSHOTS=DIR node browser.mjs <scenario>
// Uses Debian's Chromium (CHROMIUM, default /usr/bin/chromium) through playwright-core; it
// never downloads a browser. Exits 0 and prints a JSON line (the scenario's result) on
// success; exits 1 with the failed assertion otherwise. Invoked by tests/browser.rs.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { statSync } from "node:fs";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import { chromium } from "playwright-core";

const URL = process.env.CHATD_URL;
const SECRET = process.env.CHATD_SECRET;
const SHOTS = process.env.CHATD_SCREENSHOTS;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 10000;
/** The admin key tests/browser.rs configures for the `admin` scenario. */
const ADMIN_KEY = "browser-admin-key-0123456789";
const XSS = "<img src=x onerror=alert(1)>";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** An HS256 JWT for `sub` signed with the server's secret, valid `ttl` seconds. */
function token(sub, ttl = 3600) {
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + ttl })}`;
  return `${unsigned}.${createHmac("sha256", SECRET).update(unsigned).digest("base64url")}`;
}

/** A REST call as `user` (to seed data the way another client would). */
async function api(user, method, path, body) {
  const res = await fetch(URL + path, {
    method,
    headers: { authorization: `Bearer ${token(user)}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** CRC-32 (ISO-HDLC), for PNG chunks. */
function crc32(bytes) {
  let c = ~0;
  for (const byte of bytes) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

/** A `width`×`height` RGB PNG (a gradient, `blue` in the third channel), built here: no binary fixture. */
function png(width, height, blue = 128) {
  const u32 = (n) => Buffer.from([n >>> 24, n >>> 16, n >>> 8, n]);
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
    return Buffer.concat([u32(data.length), body, u32(crc32(body))]);
  };
  // 8 bits per channel, RGB, deflate, no filter, no interlace.
  const header = Buffer.concat([u32(width), u32(height), Buffer.from([8, 2, 0, 0, 0])]);
  const rows = Buffer.alloc((width * 3 + 1) * height); // each row: filter byte 0, then RGB triples
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) rows.set([(x * 255) / width, (y * 255) / height, blue], y * (width * 3 + 1) + 1 + x * 3);
  }
  const signature = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);
  return Buffer.concat([signature, chunk("IHDR", header), chunk("IDAT", deflateSync(rows)), chunk("IEND", Buffer.alloc(0))]);
}

/** A one-page PDF. */
const PDF = Buffer.from("%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n" +
  "3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 100]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n");

/** Every browser-side failure we must not see: uncaught errors and JS dialogs (alert). */
const trouble = { pageErrors: [], dialogs: [] };
/** Every page opened, for the failure screenshots and console logs. */
const pages = [];

/** A fresh browser context (one user) with one page on the chat. */
async function openUser(browser, viewport = { width: 1000, height: 650 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const log = [];
  pages.push({ page, log });
  page.on("console", (msg) => log.push(`${msg.type()}: ${msg.text()}`));
  // Every /ws frame, parsed, so a scenario can check what went over the wire.
  page.frames = [];
  page.on("websocket", (ws) => {
    const record = (dir) => (frame) => {
      try {
        page.frames.push({ dir, ...JSON.parse(frame.payload) });
      } catch {
        page.frames.push({ dir, raw: String(frame.payload) });
      }
    };
    ws.on("framesent", record("sent"));
    ws.on("framereceived", record("received"));
  });
  page.on("pageerror", (err) => trouble.pageErrors.push(String(err)));
  page.on("dialog", (dialog) => {
    trouble.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  await page.goto(URL);
  return { context, page };
}

const byTestId = (id) => `[data-testid="${id}"]`;
const item = (page, conversationId) =>
  page.locator(`${byTestId("conversation-item")}[data-conversation-id="${conversationId}"]`);

/** Waits until `fn(arg)` is truthy in the page; `what` names it in the failure. */
async function until(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: WAIT_MS });
  } catch (err) {
    throw new Error(`timed out waiting until ${what}: ${err.message.split("\n")[0]}`);
  }
}

async function waitOnline(page, who) {
  await until(page, `${who} is online`, () => document.querySelector('[data-testid="status"]')?.dataset.state === "online");
}

/** Signs in through the dev-token form. */
async function signIn(page, userId, name) {
  await page.fill(byTestId("signin-user"), userId);
  await page.fill(byTestId("signin-name"), name);
  await page.click(byTestId("signin-submit"));
  await waitOnline(page, userId);
  assert.equal(await page.textContent(byTestId("me")), `${name} (${userId})`);
}

/** The messages on screen: [{seq, text, own, read, edited, deleted}] (pending ones excluded). */
function shownMessages(page) {
  return page.$$eval(`${byTestId("message-list")} ${byTestId("message")}`, (items) =>
    items.map((li) => ({
      seq: Number(li.dataset.seq),
      text: li.querySelector('[data-testid="message-content"]')?.textContent ?? null,
      own: li.dataset.own === "true",
      read: !!li.querySelector('[data-testid="read-mark"]'),
      edited: !!li.querySelector('[data-testid="edited-mark"]'),
      deleted: li.classList.contains("is-deleted"),
    })),
  );
}

/** Waits until a message with `text` shows in the open chat; returns it. */
async function waitMessage(page, who, text) {
  await until(
    page,
    `${who} shows the message ${JSON.stringify(text)}`,
    (text) =>
      [...document.querySelectorAll('[data-testid="message-list"] [data-testid="message"] [data-testid="message-content"]')].some(
        (el) => el.textContent === text,
      ),
    text,
  );
  return (await shownMessages(page)).find((m) => m.text === text);
}

/** Types and sends `text` in the open chat; waits for the server's ack (the message gets a seq). */
async function send(page, who, text) {
  await page.fill(byTestId("composer-input"), text);
  await page.press(byTestId("composer-input"), "Enter");
  const message = await waitMessage(page, who, text);
  await until(page, `${who}'s sends are all acked`, () => !document.querySelector('[data-testid="pending-message"]'));
  return message;
}

async function messageBySeq(page, seq) {
  return page.locator(`${byTestId("message-list")} ${byTestId("message")}[data-seq="${seq}"]`);
}

async function badge(page, conversationId) {
  const badges = item(page, conversationId).locator(byTestId("unread-badge"));
  return (await badges.count()) ? (await badges.textContent()).trim() : "";
}

async function waitBadge(page, who, conversationId, expected) {
  await until(
    page,
    `${who}'s unread badge on ${conversationId} reads ${JSON.stringify(expected)}`,
    ([id, expected]) => {
      const el = document.querySelector(`[data-testid="conversation-item"][data-conversation-id="${id}"]`);
      if (!el) return false;
      return (el.querySelector('[data-testid="unread-badge"]')?.textContent ?? "") === expected;
    },
    [conversationId, expected],
  );
}

async function openConversation(page, conversationId) {
  await item(page, conversationId).locator("button").click();
  await until(
    page,
    `chat ${conversationId} is open`,
    (id) => document.querySelector('[data-testid="chat-view"]')?.dataset.conversationId === id,
    conversationId,
  );
}

/** Starts a direct chat from the "New chat" panel; returns the conversation id. */
async function startDirect(page, other) {
  await page.click(byTestId("new-chat"));
  await page.fill(byTestId("new-direct-user"), other);
  await page.click(byTestId("new-direct-submit"));
  await until(page, `a chat with ${other} is open`, (other) => {
    const view = document.querySelector('[data-testid="chat-view"]');
    return view?.dataset.conversationId && document.querySelector('[data-testid="chat-title"]')?.textContent === other;
  }, other);
  return page.getAttribute(byTestId("chat-view"), "data-conversation-id");
}

async function screenshot(page, name) {
  const path = join(SHOTS, name);
  await page.screenshot({ path });
  assert.ok(statSync(path).size > 1000, `${path} is not a real screenshot`);
  return path;
}

const scenarios = {
  /** Two users chat: typing, unread badges, read marks, escaping, edit/delete, offline catch-up. */
  async chat(browser) {
    const alice = await openUser(browser);
    const bob = await openUser(browser);
    const A = alice.page;
    const B = bob.page;
    await signIn(A, "alice", "Alice");
    await signIn(B, "bob", "Bob");

    // Alice starts a direct chat with Bob; it appears live in Bob's list, both show presence.
    const conv = await startDirect(A, "bob");
    await item(B, conv).waitFor();
    assert.equal(await item(B, conv).locator(byTestId("conversation-name")).textContent(), "alice");
    await until(A, "alice sees bob online", (id) =>
      document.querySelector(`[data-conversation-id="${id}"] [data-testid="presence-dot"]`)?.dataset.online === "true", conv);
    await until(B, "bob sees alice online", (id) =>
      document.querySelector(`[data-conversation-id="${id}"] [data-testid="presence-dot"]`)?.dataset.online === "true", conv);

    // Bob is on the list, not in the chat: Alice's message makes an unread badge and a preview.
    const first = await send(A, "alice", "Hi Bob!");
    assert.equal(first.seq, 1);
    assert.equal(first.read, false, "not read yet");
    await waitBadge(B, "bob", conv, "1");
    assert.equal(await item(B, conv).locator(byTestId("conversation-preview")).textContent(), "Hi Bob!");

    // Bob opens it: history over REST, badge gone, and Alice sees the read mark.
    await openConversation(B, conv);
    await waitMessage(B, "bob", "Hi Bob!");
    await waitBadge(B, "bob", conv, "");
    await until(A, "alice sees the read mark on seq 1", () =>
      !!document.querySelector('[data-testid="message"][data-seq="1"] [data-testid="read-mark"]'));

    // They exchange messages live.
    const reply = await send(B, "bob", "Hi Alice, yes it is available");
    const seen = await waitMessage(A, "alice", "Hi Alice, yes it is available");
    assert.equal(seen.seq, reply.seq);
    assert.equal(seen.own, false);

    // Typing: Bob sees "alice is typing…" while she types, and it clears when she sends.
    await A.click(byTestId("composer-input"));
    await A.keyboard.type("Can you ship", { delay: 40 });
    await until(B, "bob sees alice typing", () =>
      document.querySelector('[data-testid="typing-indicator"]')?.textContent === "alice is typing…");
    await A.keyboard.type(" tomorrow?", { delay: 10 });
    await A.press(byTestId("composer-input"), "Enter");
    await waitMessage(B, "bob", "Can you ship tomorrow?");
    await until(B, "the typing indicator clears", () =>
      document.querySelector('[data-testid="typing-indicator"]')?.textContent === "");

    // Bob looks at another chat: a new message from Alice badges her conversation instead.
    const other = await startDirect(B, "carol");
    assert.notEqual(other, conv);
    const unseen = await send(A, "alice", "Tomorrow works?");
    await waitBadge(B, "bob", conv, "1");
    assert.equal(await B.getAttribute(byTestId("chat-view"), "data-conversation-id"), other, "bob stayed in the other chat");
    await sleep(300);
    assert.equal((await shownMessages(A)).find((m) => m.seq === unseen.seq).read, false, "unread while bob looks elsewhere");
    await openConversation(B, conv);
    await waitBadge(B, "bob", conv, "");
    await until(A, `alice sees the read mark on seq ${unseen.seq}`, (seq) =>
      !!document.querySelector(`[data-testid="message"][data-seq="${seq}"] [data-testid="read-mark"]`), unseen.seq);

    // User content is text, never markup: no <img> element, no alert.
    const xss = await send(A, "alice", XSS);
    const shown = await waitMessage(B, "bob", XSS);
    assert.equal(shown.seq, xss.seq);
    await sleep(500); // an onerror handler would have fired by now
    for (const [who, page] of [["alice", A], ["bob", B]]) {
      assert.equal(await page.locator("img").count(), 0, `${who}'s page created an img element`);
      const contents = await page.$$eval('[data-testid="message-content"]', (els) => els.map((el) => el.textContent));
      assert.ok(contents.includes(XSS), `${who} shows the markup as literal text`);
    }
    assert.equal(await item(B, conv).locator(byTestId("conversation-preview")).textContent(), XSS);
    assert.equal(await item(A, conv).locator(byTestId("conversation-preview")).textContent(), `You: ${XSS}`);
    assert.deepEqual(trouble.dialogs, [], "no dialog fired");

    // Alice edits her first message and deletes another; Bob sees both.
    await (await messageBySeq(A, 1)).locator(byTestId("edit-button")).click();
    await A.fill(byTestId("edit-input"), "Hi Bob! (edited)");
    await A.click(byTestId("edit-save"));
    await until(B, "bob sees the edit", () => {
      const li = document.querySelector('[data-testid="message"][data-seq="1"]');
      return li?.querySelector('[data-testid="message-content"]')?.textContent === "Hi Bob! (edited)" &&
        !!li.querySelector('[data-testid="edited-mark"]');
    });
    const doomed = (await shownMessages(A)).find((m) => m.text === "Tomorrow works?");
    const deleteButton = (await messageBySeq(A, doomed.seq)).locator(byTestId("delete-button"));
    await deleteButton.click(); // asks
    await deleteButton.click(); // confirms
    for (const [who, page] of [["bob", B], ["alice", A]]) {
      await until(page, `${who} sees seq ${doomed.seq} deleted`, (seq) => {
        const li = document.querySelector(`[data-testid="message"][data-seq="${seq}"]`);
        return li?.classList.contains("is-deleted") && li.querySelector('[data-testid="message-content"]')?.textContent === "message deleted";
      }, doomed.seq);
    }

    // Bob hides the tab with the chat open: the page unfocuses, so Alice's next message is
    // unread (badge, no read mark) until the tab is visible again (focus + read).
    const setVisibility = (page, visibility) =>
      page.evaluate((visibility) => {
        Object.defineProperty(document, "visibilityState", { value: visibility, configurable: true });
        Object.defineProperty(document, "hidden", { value: visibility === "hidden", configurable: true });
        document.dispatchEvent(new Event("visibilitychange"));
      }, visibility);
    const sentBy = (page, event, from) => page.frames.slice(from).filter((f) => f.dir === "sent" && f.event === event);
    let mark = B.frames.length;
    await setVisibility(B, "hidden");
    await sleep(200);
    assert.equal(sentBy(B, "conversation:unfocus", mark).length, 1, "unfocus when hidden");
    const whileHidden = await send(A, "alice", "Did you see this?");
    await waitBadge(B, "bob", conv, "1");
    await sleep(300);
    assert.equal((await shownMessages(A)).find((m) => m.seq === whileHidden.seq).read, false, "not read while hidden");
    mark = B.frames.length;
    await setVisibility(B, "visible");
    await waitBadge(B, "bob", conv, "");
    await until(A, "alice sees the read mark once bob's tab is visible", (seq) =>
      !!document.querySelector(`[data-testid="message"][data-seq="${seq}"] [data-testid="read-mark"]`), whileHidden.seq);
    assert.deepEqual(sentBy(B, "conversation:focus", mark).map((f) => f.data), [{ conversation_id: conv }], "focus when visible");
    assert.deepEqual(sentBy(B, "message:read", mark).map((f) => f.data), [{ conversation_id: conv, seq: whileHidden.seq }]);

    // A group: Bob hears of it live, gets a badge per message, and pages back through history
    // by scrolling up (the newest 30 first, then older ones with before_seq).
    await A.click(byTestId("new-chat"));
    await A.fill(byTestId("new-group-name"), "Launch team");
    await A.fill(byTestId("new-group-members"), "bob, carol");
    await A.click(byTestId("new-group-submit"));
    await until(A, "the group is open", () => document.querySelector('[data-testid="chat-title"]')?.textContent === "Launch team");
    const team = await A.getAttribute(byTestId("chat-view"), "data-conversation-id");
    await item(B, team).waitFor();
    assert.equal(await item(B, team).locator(byTestId("conversation-name")).textContent(), "Launch team");
    await openConversation(A, conv);
    for (let i = 1; i <= 44; i++) {
      await api("alice", "POST", `/api/conversations/${team}/messages`, { content: `launch note ${i}`, client_id: `seed-${i}` });
    }
    await waitBadge(B, "bob", team, "44");
    assert.equal(await item(B, team).locator(byTestId("conversation-preview")).textContent(), "alice: launch note 44");
    await openConversation(B, team);
    await waitMessage(B, "bob", "launch note 44");
    assert.deepEqual((await shownMessages(B)).map((m) => m.seq), Array.from({ length: 30 }, (_, i) => i + 15), "the newest 30");
    await B.$eval(byTestId("message-list"), (el) => (el.scrollTop = 0));
    await waitMessage(B, "bob", "launch note 1");
    assert.deepEqual((await shownMessages(B)).map((m) => m.seq), Array.from({ length: 44 }, (_, i) => i + 1), "all 44, once each");
    await waitBadge(B, "bob", team, "");
    await openConversation(B, conv);

    // A reload keeps Alice signed in (sessionStorage) with her conversation list.
    await A.reload();
    await waitOnline(A, "alice after reload");
    assert.equal(await A.textContent(byTestId("me")), "Alice (alice)");
    await openConversation(A, conv);
    await waitMessage(A, "alice", XSS);

    // Bob goes offline; Alice keeps sending; Bob writes too (queued). Back online, Bob
    // catches up with every message exactly once and in order, and his queued one goes once.
    const before = await shownMessages(B);
    await bob.context.setOffline(true);
    await until(B, "bob's status shows offline", () =>
      document.querySelector('[data-testid="status"]')?.dataset.state === "offline");
    const away = ["Are you still there?", "I can pick it up at 6", "Or tomorrow morning", "Let me know", "Thanks!"];
    const missed = [];
    for (const text of away) missed.push(await send(A, "alice", text));
    await B.fill(byTestId("composer-input"), "Back now, 6 works");
    await B.press(byTestId("composer-input"), "Enter");
    await sleep(500);
    const during = await shownMessages(B);
    assert.deepEqual(during.map((m) => m.seq), before.map((m) => m.seq), "nothing reached bob while offline");
    assert.equal(await B.locator(byTestId("pending-message")).count(), 1, "bob's message waits in the outbox");
    const offlineShot = await screenshot(B, "offline-bob.png");

    const framesBefore = B.frames.length;
    await bob.context.setOffline(false);
    await waitOnline(B, "bob after reconnecting");
    await waitMessage(B, "bob", "Thanks!");
    await until(B, "bob's queued message is sent", () => !document.querySelector('[data-testid="pending-message"]'));
    const sent = await waitMessage(A, "alice", "Back now, 6 works");
    await sleep(500); // time for any duplicate to show up
    const after = await shownMessages(B);
    const seqs = after.map((m) => m.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "in seq order");
    assert.equal(new Set(seqs).size, seqs.length, "no seq shown twice");
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), "gap-free from 1");
    const awayTexts = after.filter((m) => away.includes(m.text)).map((m) => [m.seq, m.text]);
    assert.deepEqual(awayTexts, missed.map((m) => [m.seq, m.text]), "every missed message once, in order");
    // They came through `sync` on the new socket (not only the REST refresh).
    const frames = B.frames.slice(framesBefore);
    const syncs = frames.filter((f) => f.dir === "sent" && f.event === "sync");
    assert.ok(syncs.length >= 1, "bob sent sync after reconnecting");
    assert.equal(syncs[0].data.conversations[conv], before[before.length - 1].seq, "from the last seq bob had");
    const synced = frames
      .filter((f) => f.dir === "received" && syncs.some((s) => s.id === f.id))
      .flatMap((f) => f.ack.messages)
      .filter((m) => m.conversation_id === conv);
    assert.deepEqual(synced.map((m) => m.seq), missed.map((m) => m.seq), "sync returned exactly the missed ones");
    const resend = frames.filter((f) => f.dir === "sent" && f.event === "message:send");
    assert.equal(resend.length, 1, "the queued message went out once");
    assert.equal(after.filter((m) => m.text === "Back now, 6 works").length, 1, "the queued message shows once");
    const onAlice = await shownMessages(A);
    assert.equal(onAlice.filter((m) => m.text === "Back now, 6 works").length, 1, "alice got the queued message once");
    assert.equal(sent.seq, seqs[seqs.length - 1]);
    assert.deepEqual(onAlice.map((m) => m.seq), seqs, "both sides show the same messages");
    await until(A, "alice sees bob read what he missed", (seq) =>
      !!document.querySelector(`[data-testid="message"][data-seq="${seq}"] [data-testid="read-mark"]`), missed[4].seq);

    // Screenshots: Bob's desktop while Alice types, and his phone-width screens (chat, then
    // back to the list).
    await A.click(byTestId("composer-input"));
    await A.keyboard.type("See you at 6", { delay: 20 });
    await until(B, "bob sees alice typing again", () =>
      document.querySelector('[data-testid="typing-indicator"]')?.textContent === "alice is typing…");
    const desktopShot = await screenshot(B, "desktop-bob.png");
    await B.setViewportSize({ width: 390, height: 844 });
    assert.equal(await B.locator(".sidebar").isVisible(), false, "phone width: the chat has the whole screen");
    assert.ok(await B.locator(byTestId("back")).isVisible(), "phone width: a back button");
    const phoneChat = await screenshot(B, "phone-chat.png");
    await B.click(byTestId("back"));
    await item(B, conv).waitFor();
    assert.equal(await B.locator(byTestId("chat-view")).isVisible(), false, "phone width: the list has the whole screen");
    const phoneList = await screenshot(B, "phone-list.png");

    assert.deepEqual(trouble.dialogs, [], "no dialog fired");
    assert.deepEqual(trouble.pageErrors, [], "no uncaught page error");
    return { conversation: conv, screenshots: [offlineShot, desktopShot, phoneChat, phoneList] };
  },

  /** Photos and files: Alice sends a photo (file input, progress bar), a PDF, a captioned photo
   * dropped on the chat and a pasted one; Bob sees thumbnails, opens the full image, downloads
   * the PDF from its chip; a refused file says why. */
  async media(browser) {
    const [{ page: A }, { page: B }] = [await openUser(browser), await openUser(browser)];
    await signIn(A, "alice", "Alice");
    await signIn(B, "bob", "Bob");
    const conv = await startDirect(A, "bob");
    await item(B, conv).waitFor();
    const preview = (text) => until(B, `bob's preview reads ${text}`, ([id, text]) =>
      document.querySelector(`[data-conversation-id="${id}"] [data-testid="conversation-preview"]`)?.textContent === text, [conv, text]);
    const pick = (name, mimeType, buffer) => A.setInputFiles(byTestId("composer-file"), { name, mimeType, buffer });
    const mediaShown = (page, who, n) => until(page, `${who} shows ${n} messages with media`, (n) =>
      document.querySelectorAll('[data-testid="message"] .attachments').length === n &&
      !document.querySelector('[data-testid="pending-message"]'), n);

    // The photo's bytes are held on their way to chatd, so the pending photo and its progress
    // bar can be seen; every value the bar shows is recorded.
    let release;
    const held = new Promise((resolve) => (release = resolve));
    await A.route("**/api/uploads/*/content*", (route) => held.then(() => route.continue()));
    await A.evaluate(() => {
      window.progressSeen = [];
      const record = (changes) => changes.forEach((c) => c.target.localName === "progress" && window.progressSeen.push(c.target.value));
      new MutationObserver(record).observe(document.getElementById("message-items"), { subtree: true, attributeFilter: ["value"] });
    });
    await pick("product.png", "image/png", png(640, 480));
    await until(A, "alice sees her photo uploading", () => document.querySelector(
      '[data-testid="pending-message"][data-upload="image"]:has(img[alt="product.png"]) [data-testid="upload-progress"]'));
    const uploadingShot = await screenshot(A, "alice-uploading.png");
    release();
    await mediaShown(A, "alice", 1);
    const seen = await A.evaluate(() => window.progressSeen);
    assert.equal(seen[seen.length - 1], 100, `the bar moves up to full: ${seen}`);
    await preview("📷 Photo");
    await waitBadge(B, "bob", conv, "1");

    // A PDF: the list shows its name.
    await pick("invoice.pdf", "application/pdf", PDF);
    await mediaShown(A, "alice", 2);
    await preview("invoice.pdf");

    // Bob opens the chat; Alice drops a photo with a caption typed first, then pastes one.
    await openConversation(B, conv);
    await mediaShown(B, "bob", 2);
    await A.fill(byTestId("composer-input"), "The blue one");
    const fileEvent = (page, testId, types, name, bytes) =>
      page.evaluate(([testId, types, name, base64]) => {
        const data = new DataTransfer();
        data.items.add(new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], name, { type: "image/png" }));
        const target = document.querySelector(`[data-testid="${testId}"]`);
        for (const type of types) {
          const init = { bubbles: true, cancelable: true, dataTransfer: data, clipboardData: data };
          target.dispatchEvent(type === "paste" ? new ClipboardEvent(type, init) : new DragEvent(type, init));
        }
        return !document.querySelector('[data-testid="drop-hint"]').hidden;
      }, [testId, types, name, bytes.toString("base64")]);
    assert.equal(await fileEvent(A, "message-list", ["dragenter", "dragover"], "blue.png", png(300, 500, 255)), true, "the drop hint shows");
    assert.equal(await fileEvent(A, "message-list", ["drop"], "blue.png", png(300, 500, 255)), false, "the hint goes");
    await mediaShown(A, "alice", 3);
    assert.equal(await A.inputValue(byTestId("composer-input")), "", "the caption left the composer");
    await fileEvent(A, "composer-input", ["paste"], "pasted.png", png(64, 64, 0));
    await mediaShown(B, "bob", 4);
    const sends = A.frames.filter((f) => f.dir === "sent" && f.event === "message:send").map((f) => f.data);
    assert.deepEqual(sends.map((d) => [d.type, d.content, d.attachments.length]),
      [["image", undefined, 1], ["file", undefined, 1], ["image", "The blue one", 1], ["image", undefined, 1]]);

    // Bob: thumbnails loaded at the attachment's thumbnail size, alt = file name; the caption.
    const { messages } = await api("bob", "GET", `/api/conversations/${conv}/messages`);
    const photos = messages.filter((m) => m.attachments[0].kind === "image");
    const thumbs = await B.$$eval('[data-testid="attachment-thumbnail"]', (imgs) => imgs.map((img) =>
      ({ alt: img.alt, loaded: img.complete && img.naturalWidth > 0, width: img.width, height: img.height })));
    assert.deepEqual(thumbs, photos.map((m) => ({ alt: m.attachments[0].name, loaded: true, ...m.attachments[0].thumbnail })));
    assert.deepEqual(photos[0].attachments[0].thumbnail, { width: 320, height: 240 });
    assert.equal((await shownMessages(B)).find((m) => m.seq === photos[1].seq).text, "The blue one");

    // A click opens the full image (a lightbox), Escape or a click closes it.
    await B.click(`[data-testid="message"][data-seq="${photos[0].seq}"] ${byTestId("attachment-image")}`);
    await until(B, "the full image (640 px wide) is loaded", () => {
      const img = document.querySelector('[data-testid="lightbox-image"]');
      return img?.complete && img.naturalWidth === 640;
    });
    assert.equal(photos[0].attachments[0].width, 640);
    const lightboxShot = await screenshot(B, "bob-lightbox.png");
    await B.keyboard.press("Escape");
    assert.equal(await B.locator(byTestId("lightbox")).count(), 0, "Escape closes it");
    await B.click(`[data-testid="message"][data-seq="${photos[1].seq}"] ${byTestId("attachment-image")}`);
    await B.click(byTestId("lightbox"));
    assert.equal(await B.locator(byTestId("lightbox")).count(), 0, "a click closes it");

    // The PDF is a chip with its name and size; its link downloads it.
    const chip = B.locator(byTestId("attachment-file"));
    assert.equal(await chip.locator(byTestId("attachment-name")).textContent(), "invoice.pdf");
    assert.equal(await chip.locator(byTestId("attachment-size")).textContent(), `${PDF.length} B`);
    const download = await chip.evaluate((a) => fetch(a.href).then(async (res) =>
      [res.status, res.headers.get("content-disposition").split(";")[0], (await res.arrayBuffer()).byteLength]));
    assert.deepEqual(download, [200, "attachment", PDF.length], "the chip's link downloads the PDF");
    await B.$eval(byTestId("message-list"), (el) => (el.scrollTop = el.scrollHeight));
    const chatShot = await screenshot(B, "bob-media.png");

    // A type chatd never accepts: the pending file says why, and can be discarded.
    await pick("page.html", "text/html", Buffer.from("<p>hi</p>"));
    await until(A, "alice sees the refusal", () =>
      /not sent: .*html/i.test(document.querySelector('[data-testid="pending-error"]')?.textContent || ""));
    const refusedShot = await screenshot(A, "alice-refused.png");
    await A.click(byTestId("pending-discard"));
    await until(A, "the refused file is discarded", () => !document.querySelector('[data-testid="pending-message"]'));

    assert.deepEqual(trouble.dialogs, [], "no dialog fired");
    assert.deepEqual(trouble.pageErrors, [], "no uncaught page error");
    return { conversation: conv, screenshots: [uploadingShot, lightboxShot, chatShot, refusedShot] };
  },

  /** Reactions, threads, pins and search between a group's owner (Alice) and a member (Bob). */
  async social(browser) {
    const [{ page: A }, { page: B, context: bobContext }] = [await openUser(browser), await openUser(browser)];
    await signIn(A, "alice", "Alice");
    await signIn(B, "bob", "Bob");

    // Alice creates a group with Bob (she owns it); both open it.
    await A.click(byTestId("new-chat"));
    await A.fill(byTestId("new-group-name"), "Launch");
    await A.fill(byTestId("new-group-members"), "bob");
    await A.click(byTestId("new-group-submit"));
    await until(A, "the group is open", () => document.querySelector('[data-testid="chat-title"]')?.textContent === "Launch");
    const conv = await A.getAttribute(byTestId("chat-view"), "data-conversation-id");
    await item(B, conv).waitFor();
    await openConversation(B, conv);
    const root = await send(A, "alice", "Ship it today?");
    await send(A, "alice", "검색을 해보세요");
    await send(A, "alice", "🚀🚀 검색 결과 <b>ok</b>");
    const long = `${"가나다 🙂 ".repeat(50)}검색 끝`; // 300 characters before the match
    await send(A, "alice", long);
    await waitMessage(B, "bob", long);
    const rootOn = (page) => page.locator(`${byTestId("message-list")} ${byTestId("message")}[data-seq="${root.seq}"]`);
    const chip = (emoji) => `${byTestId("reaction-chip")}[data-emoji="${emoji}"]`;
    const chipIs = (page, who, emoji, count, mine) =>
      until(page, `${who} sees ${emoji} × ${count} (${mine ? "theirs" : "not theirs"}) on the root`, ([seq, emoji, count, mine]) => {
        const el = document.querySelector(
          `[data-testid="message-list"] [data-testid="message"][data-seq="${seq}"] [data-testid="reaction-chip"][data-emoji="${emoji}"]`);
        if (count === 0) return !el;
        return el?.textContent === `${emoji} ${count}` && el.getAttribute("aria-pressed") === String(mine);
      }, [root.seq, emoji, count, mine]);

    // Reactions: Bob picks 👍 from the picker; Alice's page shows the chip with 1, his is highlighted.
    await rootOn(B).locator(byTestId("react-button")).click();
    await rootOn(B).locator(byTestId("reaction-picker")).waitFor();
    const options = await rootOn(B).locator(byTestId("reaction-option")).evaluateAll((els) =>
      els.map((el) => [el.dataset.emoji, el.getAttribute("aria-label")]));
    assert.deepEqual(options.map(([e]) => e), ["👍", "❤️", "😂", "😮", "😢", "🙏"]);
    assert.equal(options[0][1], "React with 👍");
    await rootOn(B).locator(`${byTestId("reaction-option")}[data-emoji="👍"]`).click();
    await chipIs(A, "alice", "👍", 1, false);
    await chipIs(B, "bob", "👍", 1, true);
    assert.equal(await rootOn(B).locator(byTestId("reaction-picker")).count(), 0, "the picker closes after a pick");
    const reacts = B.frames.filter((f) => f.dir === "sent" && f.event === "message:react").map((f) => f.data);
    assert.deepEqual(reacts, [{ message_id: await rootOn(B).getAttribute("data-message-id"), emoji: "👍" }]);
    // A click on the chip toggles Alice's own reaction: on (2 for both), then off again.
    await rootOn(A).locator(chip("👍")).click();
    await chipIs(B, "bob", "👍", 2, true);
    await chipIs(A, "alice", "👍", 2, true);
    await rootOn(A).locator(byTestId("react-button")).click();
    await rootOn(A).locator(`${byTestId("reaction-option")}[data-emoji="🙏"]`).click();
    await chipIs(B, "bob", "🙏", 1, false);
    await rootOn(A).locator(chip("👍")).click();
    await chipIs(B, "bob", "👍", 1, true);
    await chipIs(A, "alice", "👍", 1, false);
    const reactionsShot = await screenshot(A, "alice-reactions.png");

    // Threads: Bob replies in the thread from the side panel; it is not on either timeline,
    // Alice's root shows "1 reply", and her panel shows the reply.
    await rootOn(B).locator(byTestId("reply-in-thread")).click();
    await until(B, "bob's thread panel shows the root", () =>
      !document.querySelector('[data-testid="thread-panel"]').hidden &&
      document.querySelector('[data-testid="thread-root"] [data-testid="message-content"]')?.textContent === "Ship it today?");
    const replyText = "On it, shipping at 5";
    await B.fill(byTestId("thread-input"), replyText);
    await B.press(byTestId("thread-input"), "Enter");
    const inPanel = (page, who, text) => until(page, `${who}'s thread panel shows ${JSON.stringify(text)}`, (text) =>
      [...document.querySelectorAll('[data-testid="thread-list"] [data-testid="thread-reply"] [data-testid="message-content"]')]
        .some((el) => el.textContent === text), text);
    await inPanel(B, "bob", replyText);
    const summary = (page, who, text) => until(page, `${who}'s root reads ${JSON.stringify(text)}`, ([seq, text]) =>
      document.querySelector(`[data-testid="message-list"] [data-testid="message"][data-seq="${seq}"] [data-testid="thread-summary"]`)
        ?.textContent === text, [root.seq, text]);
    await summary(A, "alice", "1 reply");
    await summary(B, "bob", "1 reply");
    const sentReply = B.frames.find((f) => f.dir === "sent" && f.event === "message:send" && f.data.content === replyText).data;
    assert.equal(sentReply.thread_id, await rootOn(B).getAttribute("data-message-id"));
    assert.equal(sentReply.also_in_conversation, false);
    await sleep(300);
    for (const [who, page] of [["alice", A], ["bob", B]]) {
      assert.ok(!(await shownMessages(page)).some((m) => m.text === replyText), `${who}'s timeline does not show the thread-only reply`);
    }
    await rootOn(A).locator(byTestId("thread-summary")).click();
    await inPanel(A, "alice", replyText);
    assert.equal(await A.textContent(`${byTestId("thread-root")} ${byTestId("message-content")}`), "Ship it today?");
    // Alice answers with "also send to the conversation": the timeline shows it too.
    const alsoText = "Great, telling everyone";
    await A.fill(byTestId("thread-input"), alsoText);
    await A.check(byTestId("thread-also"));
    await A.click(byTestId("thread-send"));
    await waitMessage(B, "bob", alsoText);
    await inPanel(B, "bob", alsoText);
    await summary(B, "bob", "2 replies");
    await until(A, "alice's box is cleared after the send", () => !document.querySelector('[data-testid="thread-also"]').checked);
    assert.ok(!(await shownMessages(B)).some((m) => m.text === replyText), "still not the thread-only one");
    const threadShot = await screenshot(A, "alice-thread.png");
    await A.click(byTestId("thread-close"));
    await until(A, "alice's thread panel closes", () => document.querySelector('[data-testid="thread-panel"]').hidden);

    // Pins: Bob (a member) may not pin in a group, and is told so; Alice (the owner) pins, and
    // Bob's open pins list shows it live, then again from the server.
    await rootOn(B).locator(byTestId("pin-button")).click();
    await until(B, "bob is told he may not pin", (seq) =>
      /owner and admins/.test(document.querySelector(
        `[data-testid="message-list"] [data-testid="message"][data-seq="${seq}"] [data-testid="message-error"]`)?.textContent || ""), root.seq);
    await B.click(byTestId("pins-toggle"));
    await until(B, "bob's pins list is empty", () =>
      document.querySelector('[data-testid="pins-list"] [data-testid="pins-status"]')?.textContent === "No pinned messages.");
    await rootOn(A).locator(byTestId("pin-button")).click();
    const pinListed = (why) => until(B, `bob's pins list shows the root (${why})`, () => {
      const items = [...document.querySelectorAll('[data-testid="pins-list"] [data-testid="pin-item"]')];
      return items.length === 1 && items[0].querySelector('[data-testid="pin-content"]').textContent === "Ship it today?";
    });
    await pinListed("live");
    await until(A, "alice's root is marked pinned", (seq) =>
      !!document.querySelector(`[data-testid="message-list"] [data-testid="message"][data-seq="${seq}"] [data-testid="pinned-mark"]`), root.seq);
    const pinsShot = await screenshot(B, "bob-pins.png");
    await B.click(byTestId("pins-close"));
    await B.click(byTestId("pins-toggle"));
    await pinListed("reloaded");
    await B.click(byTestId("pins-toggle"));

    // Offline catch-up: while Bob is offline Alice adds ❤️ and unpins over REST; back online,
    // his `sync` asks for what changed since the revision he holds and gets the root back.
    const rootId = await rootOn(B).getAttribute("data-message-id");
    const framesBefore = B.frames.length;
    await bobContext.setOffline(true);
    await until(B, "bob's status shows offline", () => document.querySelector('[data-testid="status"]')?.dataset.state === "offline");
    await api("alice", "PUT", `/api/messages/${rootId}/reactions/${encodeURIComponent("❤️")}`);
    await api("alice", "DELETE", `/api/messages/${rootId}/pin`);
    await bobContext.setOffline(false);
    await waitOnline(B, "bob again");
    await chipIs(B, "bob", "❤️", 1, false);
    await until(B, "bob's root is no longer marked pinned", (seq) =>
      !document.querySelector(`[data-testid="message-list"] [data-testid="message"][data-seq="${seq}"] [data-testid="pinned-mark"]`), root.seq);
    const frames = B.frames.slice(framesBefore);
    const syncs = frames.filter((f) => f.dir === "sent" && f.event === "sync");
    assert.ok(syncs.length >= 1 && Number.isInteger(syncs[0].data.revisions[conv]), "bob's sync names the revision he holds");
    const changed = frames.filter((f) => f.dir === "received" && syncs.some((s) => s.id === f.id)).flatMap((f) => f.ack.changed || []);
    assert.ok(changed.some((m) => m.id === rootId && m.reaction_counts["❤️"] === 1 && m.pinned_at === null),
      `the root came back in 'changed': ${JSON.stringify(changed.map((m) => m.id))}`);

    // Search: from another chat, Bob searches 검색; every match shows with exactly 검색 marked
    // (offsets in code points: 🚀 and 🙂 are two UTF-16 units each), markup as text, and a
    // long text from a little before its match.
    await startDirect(B, "carol");
    await B.fill(byTestId("search-input"), "검색");
    await B.press(byTestId("search-input"), "Enter");
    await until(B, "three results for 검색", () => document.querySelectorAll('[data-testid="search-result"]').length === 3);
    const results = await B.$$eval(byTestId("search-result"), (els) => els.map((el) => ({
      conversation: el.dataset.conversationId,
      name: el.querySelector('[data-testid="search-result-conversation"]').textContent,
      text: el.querySelector('[data-testid="search-result-content"]').textContent,
      marks: [...el.querySelectorAll("mark")].map((m) => m.textContent),
      elements: el.querySelector('[data-testid="search-result-content"]').querySelectorAll("*").length,
    })));
    assert.deepEqual(results, [
      { conversation: conv, name: "Launch", text: `…${Array.from(long).slice(300 - 40).join("")}`, marks: ["검색"], elements: 1 },
      { conversation: conv, name: "Launch", text: "🚀🚀 검색 결과 <b>ok</b>", marks: ["검색"], elements: 1 },
      { conversation: conv, name: "Launch", text: "검색을 해보세요", marks: ["검색"], elements: 1 },
    ]);
    const searchShot = await screenshot(B, "bob-search.png");
    await B.locator(byTestId("search-result")).nth(2).click();
    await until(B, "the result opened its conversation", (id) =>
      document.querySelector('[data-testid="chat-view"]')?.dataset.conversationId === id, conv);
    await waitMessage(B, "bob", "검색을 해보세요");

    // At phone width the thread panel takes the whole screen, and closes back to the chat.
    await B.setViewportSize({ width: 390, height: 844 });
    await rootOn(B).locator(byTestId("thread-summary")).click();
    await inPanel(B, "bob", alsoText);
    assert.deepEqual(await B.locator(byTestId("thread-panel")).boundingBox(), { x: 0, y: 0, width: 390, height: 844 });
    const phoneThreadShot = await screenshot(B, "bob-phone-thread.png");
    await B.click(byTestId("thread-close"));
    await until(B, "bob's thread panel closes", () => document.querySelector('[data-testid="thread-panel"]').hidden);
    assert.ok(await B.locator(byTestId("composer-input")).isVisible(), "back to the chat");

    assert.deepEqual(trouble.dialogs, [], "no dialog fired");
    assert.deepEqual(trouble.pageErrors, [], "no uncaught page error");
    return { conversation: conv, screenshots: [reactionsShot, threadShot, pinsShot, searchShot, phoneThreadShot] };
  },

  /** The read-only admin page: a wrong key is refused, the right one shows this node's live
   * figures, which move when a message is sent. */
  async admin(browser) {
    const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
    const page = await context.newPage();
    const log = [];
    pages.push({ page, log });
    page.on("console", (msg) => log.push(`${msg.type()}: ${msg.text()}`));
    page.on("pageerror", (err) => trouble.pageErrors.push(String(err)));
    await page.goto(URL + "/admin");
    await page.fill("#key", "not-the-admin-key");
    await page.click("button[type=submit]");
    await until(page, "a wrong key is refused", () =>
      document.getElementById("status").textContent.includes("not the admin key"));
    assert.equal(await page.isVisible("#stats"), false, "no figures without the key");

    await page.fill("#key", ADMIN_KEY);
    await page.click("button[type=submit]");
    await until(page, "the figures are shown", () => !document.getElementById("stats").hidden);
    const figure = (id) => page.textContent(`#${id}`).then(Number);
    const before = await figure("messages_per_minute");
    const group = await api("alice", "POST", "/api/conversations", { type: "group", members: ["bob"] });
    await api("alice", "POST", `/api/conversations/${group.id}/messages`, { content: "hello admin" });
    await until(page, "the next poll counts the message", (n) =>
      Number(document.getElementById("messages_per_minute").textContent) === n, before + 1);
    assert.equal(await figure("total"), 0, "no realtime connection on this node");
    const shot = await screenshot(page, "admin.png");
    assert.deepEqual(trouble.pageErrors, [], "no uncaught page error");
    return { screenshots: [shot], messages_per_minute: before + 1 };
  },

  /** Without --dev: the page says so and signs in with a pasted JWT; an expired one ends the session. */
  async paste_token(browser) {
    const { page } = await openUser(browser);
    await page.fill(byTestId("signin-user"), "dave");
    await page.click(byTestId("signin-submit"));
    await until(page, "the page explains dev tokens are off", () =>
      document.querySelector('[data-testid="signin-error"]')?.textContent.includes("--dev"));
    assert.equal(await page.getAttribute(byTestId("jwt-box"), "open"), "", "the paste field is opened");

    await page.fill(byTestId("signin-jwt"), "not.a-token");
    await page.click(byTestId("signin-jwt-submit"));
    await until(page, "a malformed token is refused", () =>
      document.querySelector('[data-testid="signin-error"]')?.textContent.includes("JWT"));

    // Valid for a few seconds: signs in, then the server closes with 1008 token_expired.
    await page.fill(byTestId("signin-jwt"), token("dave", 4));
    await page.click(byTestId("signin-jwt-submit"));
    await waitOnline(page, "dave");
    assert.equal(await page.textContent(byTestId("me")), "dave");
    await page.waitForFunction(
      () => !document.querySelector('[data-testid="signin"]').hidden &&
        document.querySelector('[data-testid="signin-error"]').textContent.includes("expired"),
      null,
      { timeout: 15000 },
    );
    assert.equal(await page.evaluate(() => sessionStorage.getItem("chatd.token")), null, "the token is forgotten");

    // A fresh token signs in again.
    await page.fill(byTestId("signin-jwt"), token("dave"));
    await page.click(byTestId("signin-jwt-submit"));
    await waitOnline(page, "dave again");
    const shot = await screenshot(page, "paste-token.png");
    assert.deepEqual(trouble.pageErrors, [], "no uncaught page error");
    return { screenshots: [shot] };
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`unknown scenario ${name}; known: ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
assert.ok(URL && SECRET && SHOTS, "CHATD_URL, CHATD_SECRET and CHATD_SCREENSHOTS must be set");
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
try {
  const result = await scenarios[name](browser);
  console.log(JSON.stringify(result));
} catch (err) {
  console.error(err);
  process.exitCode = 1;
  // What each page looked like and said, for whoever reads the failure.
  if (trouble.pageErrors.length) console.error(`uncaught page errors:\n  ${trouble.pageErrors.join("\n  ")}`);
  for (const [i, { page, log }] of pages.entries()) {
    const path = join(SHOTS, `failure-${name}-${i}.png`);
    await page.screenshot({ path }).then(() => console.error(`screenshot: ${path}`), () => {});
    if (log.length) console.error(`page ${i} console:\n  ${log.slice(-30).join("\n  ")}`);
  }
} finally {
  await browser.close();
}
