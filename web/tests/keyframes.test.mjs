// The switch plot on the keyframe and continuation workflows (issue 14): every sampler finds its model file
// through the graph (keyframe, extend and join nodes sit on the conditioning, latent and image paths only)
// and plans the official switch of that model.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { MODEL_SOCKET, samplerInputs, upstreamModelName } from "../wan22duo_graph.js";
import { guessVariant } from "../wan22duo_model_info.js";
import { planSwitch } from "../wan22duo_switch_plan.js";

const MODEL_INPUTS = new Set(["model", "high_noise_model", "low_noise_model"]);

/** LiteGraph-like nodes (widgets, inputs, getInputNode) from an API-form workflow. */
function graphFromApi(api) {
  const nodes = {};
  for (const [id, entry] of Object.entries(api)) {
    const widgets = [];
    const inputs = [];
    for (const [name, value] of Object.entries(entry.inputs)) {
      if (Array.isArray(value)) inputs.push({ name, type: MODEL_INPUTS.has(name) ? MODEL_SOCKET : "OTHER", link: value[0] });
      else widgets.push({ name, value });
    }
    nodes[id] = { id, type: entry.class_type, widgets, inputs, getInputNode: (slot) => nodes[inputs[slot]?.link] ?? null };
  }
  return nodes;
}

function load(name) {
  return JSON.parse(readFileSync(new URL(`../../workflows/api/${name}.json`, import.meta.url), "utf8"));
}

for (const [name, variant, samplers, highSteps] of [
  ["i2v_a14b_first_last", "i2v_a14b", 1, 15],
  ["i2v_a14b_extend", "i2v_a14b", 2, 15],
  ["ti2v_5b_first_last", "ti2v_5b", 1, 50],
]) {
  test(`${name}: each sampler plots the ${variant} switch`, () => {
    const nodes = Object.values(graphFromApi(load(name)));
    const found = nodes.filter((n) => n.type === "Wan22DuoSampler");
    assert.equal(found.length, samplers);
    for (const sampler of found) {
      const file = upstreamModelName(sampler, "high_noise_model");
      assert.equal(guessVariant(file), variant, `${file}`);
      const plan = planSwitch(samplerInputs(sampler, variant));
      assert.equal(plan.error, undefined);
      assert.equal(plan.switchStep, highSteps);
      assert.equal(plan.single, variant === "ti2v_5b");
    }
  });
}
