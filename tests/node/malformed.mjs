// Sends malformed events to a running chatd with the official socket.io-client, one at a
// time, and records what the server answered to each (tests/malformed.rs judges them):
//   CHATD_URL=http://127.0.0.1:PORT CHATD_TOKEN=<jwt> node malformed.mjs <cases.json> <results.json>
// cases.json: [{event, data, ack}] (`data` absent: the event is emitted without a payload).
// results.json: one entry per case: {answer: "ack"|"error"|"disconnect"|"timeout", body}.
// A connection the server closed is replaced by a new one before the next case.
import { readFileSync, writeFileSync } from "node:fs";
import { io } from "socket.io-client";

const URL = process.env.CHATD_URL;
const TOKEN = process.env.CHATD_TOKEN;
const [casesPath, resultsPath] = process.argv.slice(2);
const WAIT_MS = 5000;

/** A connected socket (after `ready`), or an exception after WAIT_MS. */
function connect() {
  return new Promise((resolve, reject) => {
    const socket = io(URL, { auth: { token: TOKEN }, transports: ["websocket"], reconnection: false, forceNew: true });
    const timer = setTimeout(() => reject(new Error("no ready within 5 s")), WAIT_MS);
    socket.once("ready", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Emits one case and resolves with the first answer: its ack, an `error` event, or the end
 * of the connection. */
function run(socket, { event, data, ack }) {
  return new Promise((resolve) => {
    const done = (answer, body) => {
      clearTimeout(timer);
      socket.off("error", onError);
      socket.off("disconnect", onDisconnect);
      resolve({ answer, body });
    };
    const timer = setTimeout(() => done("timeout", null), WAIT_MS);
    const onError = (body) => done("error", body);
    const onDisconnect = (reason) => done("disconnect", reason);
    socket.on("error", onError);
    socket.on("disconnect", onDisconnect);
    const args = data === undefined ? [] : [data];
    if (ack) socket.emit(event, ...args, (body) => done("ack", body));
    else socket.emit(event, ...args);
  });
}

const cases = JSON.parse(readFileSync(casesPath, "utf8"));
const results = [];
let socket = await connect();
for (const c of cases) {
  if (!socket.connected) socket = await connect();
  results.push(await run(socket, c));
}
socket.disconnect();
writeFileSync(resultsPath, JSON.stringify(results));
console.log(JSON.stringify({ cases: results.length }));
