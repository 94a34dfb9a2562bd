// The model-info client: server answers win, failures fall back to the file-name guess.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createModelInfoClient, infoFromName } from "../wan22duo_model_info.js";

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

test("the server's answer replaces the guess and triggers one update", async () => {
  const urls = [];
  const updates = [];
  const client = createModelInfoClient(
    async (url) => {
      urls.push(url);
      return { status: 200, body: { variant: "i2v_a14b", role: "high_noise", boundary: 0.9, source: "header" } };
    },
    (name, info) => updates.push([name, info.variant]),
  );
  // The name says T2V; the header says I2V: the header wins once it arrives.
  const name = "renamed t2v high noise.safetensors";
  assert.equal(client.get(name).variant, "t2v_a14b");
  assert.equal(client.get(name).variant, "t2v_a14b"); // pending: no second request
  await tick();
  assert.equal(client.get(name).variant, "i2v_a14b");
  assert.deepEqual(urls, ["/wan22duo/model_info?name=renamed%20t2v%20high%20noise.safetensors"]);
  assert.deepEqual(updates, [[name, "i2v_a14b"]]);
});

test("a missing route or a network error settles on the name guess", async () => {
  for (const fetchJson of [
    async () => ({ status: 404, body: null }),
    async () => {
      throw new TypeError("Failed to fetch");
    },
    async () => ({ status: 200, body: { variant: "sdxl" } }),
  ]) {
    const client = createModelInfoClient(fetchJson);
    client.get("wan2.2_ti2v_5B_fp16.safetensors");
    await tick();
    const info = client.get("wan2.2_ti2v_5B_fp16.safetensors");
    assert.equal(info.variant, "ti2v_5b");
    assert.equal(info.source, "name");
    assert.equal(info.boundary, null);
  }
});

test("an unreadable file (variant null) uses the server's guess, and no name gives null", async () => {
  const client = createModelInfoClient(async () => ({
    status: 200,
    body: { variant: null, error: "not a DiT", guess: infoFromName("wan2.2_i2v_low_noise_14B.safetensors") },
  }));
  client.get("x.safetensors");
  await tick();
  assert.equal(client.get("x.safetensors").variant, "i2v_a14b");
  assert.equal(client.get(""), null);
  assert.equal(client.get(undefined), null);
});

test("a throwing update hook does not break the client", async () => {
  const client = createModelInfoClient(
    async () => ({ status: 200, body: { variant: "t2v_a14b" } }),
    () => {
      throw new Error("redraw failed");
    },
  );
  client.get("a.safetensors");
  await tick();
  assert.equal(client.get("a.safetensors").variant, "t2v_a14b");
});
