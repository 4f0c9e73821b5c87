// The example chat: a tether client in a page, its connection state, the messages of one
// channel, and what happens on a disconnect and its resume.
import { Client } from "../js/dist/index.js";

const params = new URLSearchParams(location.search);
const server = params.get("server") ?? "ws://127.0.0.1:7400/";
const channelName = params.get("channel") ?? "chat";
const me = params.get("client") ?? `guest-${Math.floor(Math.random() * 1000)}`;

const $ = (id) => document.getElementById(id);
const log = (text) => {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("log").prepend(item);
};
$("channel").textContent = channelName;

const client = new Client(server, {
  // The page's backend mints tokens (example/serve.mjs); the client asks again before
  // each expires and renews it without reconnecting.
  authCallback: async (reason) => {
    log(`token requested (${reason})`);
    const response = await fetch(`/token?client=${encodeURIComponent(me)}`);
    if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
    return response.text();
  },
});

client.on("statechange", ({ current, reason }) => {
  $("state").textContent = current;
  $("state").className = current;
  log(reason ? `${current}: ${reason.message}` : current);
});

const chat = client.channel(channelName);
chat.onDiscontinuity((gap) => log(`gap after ${gap.last?.serial ?? "start"}: ${gap.reason?.message ?? ""}`));
chat
  .subscribe((message) => {
    const item = document.createElement("li");
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = message.publisher;
    const serial = document.createElement("span");
    serial.className = "serial";
    serial.textContent = `#${message.position.serial}`;
    item.append(who, message.text, serial);
    $("messages").append(item);
    item.scrollIntoView({ block: "nearest" });
  })
  .then(() => log(`subscribed to ${channelName}`), (error) => log(`subscribe failed: ${error.code}`));

$("compose").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value;
  $("text").value = "";
  try {
    await chat.publish("text", text);
  } catch (error) {
    log(`publish failed: ${error.code}: ${error.message}`);
  }
});

$("drop").addEventListener("click", () => {
  // For the demonstration only: what a network drop does.
  client.dropTransport();
  log("connection dropped by hand");
});

window.tetherExample = { client, chat };
