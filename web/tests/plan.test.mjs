// The routing plan and the model-name fallback against vectors from the Python side
// (engine/sampling/loop.py's plan and nodes/routes.py's name guess), plus caption wording.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { guessRole, guessVariant } from "../wan22duo_model_info.js";
import { planSwitch, splitCaption } from "../wan22duo_switch_plan.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));

test("plans match the engine (auto boundary per model, TI2V-5B single, overrides, refusals)", () => {
  assert.ok(vectors.plans.length > 300);
  for (const c of vectors.plans) {
    const [variant, scheduler, steps, shift, boundary, switchStep, hasLow, k, used, refused] = c;
    const plan = planSwitch({ scheduler, steps, shift, boundary, switchStep, variant, hasLow });
    const where = JSON.stringify(c);
    if (refused) {
      // The engine refuses; the plot must say so, as an error or as a warning it cannot run.
      assert.ok(plan.error || plan.warning, `${where}: expected an error or warning, got ${plan.caption}`);
    } else {
      assert.equal(plan.error, undefined, `${where}: ${plan.error}`);
      // The engine's plan ignores a low model on TI2V-5B (the expert check refuses it later);
      // the plot already warns about it.
      if (!(variant === "ti2v_5b" && hasLow)) assert.equal(plan.warning, null, where);
      assert.equal(plan.switchStep, k, where);
      assert.equal(plan.boundary, used, where);
      assert.equal(plan.single, variant === "ti2v_5b", where);
    }
  }
});

test("file-name guesses match nodes/routes.py", () => {
  for (const [name, variant, role] of vectors.names) {
    assert.equal(guessVariant(name), variant, name);
    assert.equal(guessRole(name, guessVariant(name)), role, name);
  }
});

test("caption wording", () => {
  assert.equal(splitCaption(26, 40), "high-noise steps 1–26, low-noise 27–40");
  assert.equal(splitCaption(1, 2), "high-noise step 1, low-noise 2");
  assert.equal(splitCaption(0, 40), "low-noise steps 1–40 (high-noise expert unused)");
  assert.equal(splitCaption(40, 40), "high-noise steps 1–40 (low-noise expert unused)");
  assert.equal(splitCaption(1, 1), "high-noise step 1 (low-noise expert unused)");
  assert.equal(splitCaption(50, 50, true), "single model: steps 1–50");
});

test("T2V defaults read as the issue's example", () => {
  const plan = planSwitch({ scheduler: "wan", steps: 40, shift: 12, boundary: -1, switchStep: -1, variant: "t2v_a14b" });
  assert.equal(plan.caption, "high-noise steps 1–26, low-noise 27–40");
  assert.match(plan.note, /0\.875 \(auto, T2V-A14B\)/);
});

test("unknown model assumes the T2V boundary and says so", () => {
  const plan = planSwitch({ scheduler: "wan", steps: 40, shift: 5, boundary: -1, switchStep: -1, variant: null });
  assert.equal(plan.boundary, 0.875);
  assert.match(plan.note, /model unknown/);
});

test("bad widget values give an error message, never a throw", () => {
  for (const bad of [
    { scheduler: "karras", steps: 40, shift: 5, boundary: -1, switchStep: -1 },
    { scheduler: "wan", steps: 0, shift: 5, boundary: -1, switchStep: -1 },
    { scheduler: "wan", steps: 40, shift: 0, boundary: -1, switchStep: -1 },
    { scheduler: "wan", steps: 40, shift: 5, boundary: 2, switchStep: -1 },
    { scheduler: "wan", steps: 40, shift: 5, boundary: 0.9, switchStep: 99 },
    { scheduler: undefined, steps: undefined, shift: undefined, boundary: undefined, switchStep: undefined },
  ]) {
    const plan = planSwitch(bad);
    assert.equal(typeof plan.error, "string", JSON.stringify(bad));
  }
});
