// The package's typings as a TypeScript application uses them (.ci/browser-check compiles
// this with --strict and no emit): the README's calls type-check against dist/index.d.ts.
import { Client, type Message } from "../js/dist/index.js";
const client = new Client("ws://127.0.0.1:7400/", { authCallback: async () => "token" });
client.on("statechange", ({ current }) => console.log(current));
const chat = client.channel("chat");
async function main() {
  await chat.subscribe((m: Message) => console.log(m.text, m.position.serial));
  await chat.publish("text", "hello");
  for await (const m of chat.subscribe()) console.log(m.publisher);
  const page = await chat.history({ limit: 10 });
  console.log(page.messages.length, page.next);
  await client.close();
}
main();
