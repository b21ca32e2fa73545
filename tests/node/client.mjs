// One official socket.io-client connection driven line by line from a Rust test
// (tests/common/node.rs `SioClient`):
//   node client.mjs <url> <token>
// stdout, one JSON line each: {"connected":true} once connected, {"event","data"} for every
// event received, {"ack":id,"data"} for the ack of a command, {"disconnect":reason}.
// stdin, one JSON line each: {"id","event","data"} emits with an ack callback.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const [url, token] = process.argv.slice(2);
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const socket = io(url, { auth: { token }, transports: ["websocket"], reconnection: false, forceNew: true });
socket.on("connect", () => out({ connected: true }));
socket.on("connect_error", (err) => out({ connect_error: err.message }));
socket.on("disconnect", (reason) => out({ disconnect: reason }));
socket.onAny((event, data) => out({ event, data }));
createInterface({ input: process.stdin }).on("line", (line) => {
  const { id, event, data } = JSON.parse(line);
  socket.emit(event, data, (ack) => out({ ack: id, data: ack }));
});
process.stdin.on("end", () => {
  socket.close();
  process.exit(0);
});
