// Checks web/wan22duo_schedule.js against vectors computed by the Python engine
// (scripts/make_web_vectors.py -> web/tests/vectors.json).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  boundarySwitchStep,
  comfyFlowSigmaTable,
  makeSchedule,
  resolveSwitchStep,
} from "../wan22duo_schedule.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));

function label(v) {
  return `${v.scheduler} steps=${v.steps} shift=${v.shift}`;
}

test("vectors cover both schedules, steps=1 and long schedules", () => {
  const names = new Set(vectors.schedules.map((v) => v.scheduler));
  assert.deepEqual([...names].sort(), ["simple", "wan"]);
  assert.ok(vectors.schedules.some((v) => v.steps === 1));
  assert.ok(vectors.schedules.some((v) => v.scheduler === "simple" && v.steps > 1000));
  assert.ok(vectors.errors.length >= 5);
});

test("sigmas match the engine exactly (float32 values)", () => {
  for (const v of vectors.schedules) {
    const s = makeSchedule(v.scheduler, v.steps, v.shift);
    assert.equal(s.sigmas.length, v.steps + 1, label(v));
    for (let i = 0; i <= v.steps; i++) {
      if (s.sigmas[i] !== v.sigmas[i]) {
        assert.fail(`${label(v)} sigma[${i}]: js ${s.sigmas[i]} != engine ${v.sigmas[i]}`);
      }
    }
  }
});

test("timesteps match the engine exactly", () => {
  for (const v of vectors.schedules) {
    const s = makeSchedule(v.scheduler, v.steps, v.shift);
    assert.equal(s.timesteps.length, v.steps, label(v));
    for (let i = 0; i < v.steps; i++) {
      if (s.timesteps[i] !== v.timesteps[i]) {
        assert.fail(`${label(v)} timestep[${i}]: js ${s.timesteps[i]} != engine ${v.timesteps[i]}`);
      }
    }
  }
});

test("switch steps match the engine exactly", () => {
  let count = 0;
  for (const v of vectors.schedules) {
    for (const [boundary, switchStep, expected] of v.switches) {
      const got = resolveSwitchStep(v.timesteps, boundary, switchStep);
      assert.equal(got, expected, `${label(v)} boundary=${boundary} switch_step=${switchStep}`);
      count++;
    }
  }
  assert.ok(count > 1000, `only ${count} switch cases`);
});

test("switch steps from the JS schedule equal those from the engine's timesteps", () => {
  for (const v of vectors.schedules) {
    const s = makeSchedule(v.scheduler, v.steps, v.shift);
    for (const [boundary, switchStep, expected] of v.switches) {
      assert.equal(resolveSwitchStep(s.timesteps, boundary, switchStep), expected, label(v));
    }
  }
});

test("inputs the engine rejects are rejected", () => {
  for (const c of vectors.errors) {
    const run = () => {
      if ("boundary" in c) {
        const s = makeSchedule(c.scheduler, c.steps, c.shift);
        resolveSwitchStep(s.timesteps, c.boundary, c.switch_step ?? -1);
      } else {
        makeSchedule(c.scheduler, c.steps, c.shift);
      }
    };
    assert.throws(run, RangeError, JSON.stringify(c));
  }
});

// Independent anchors from the spec (docs table, §1.3), not from any code.
test("spec: T2V 40 steps shift 12 gives the official timesteps and 26 high-noise steps", () => {
  const s = makeSchedule("wan", 40, 12.0);
  assert.deepEqual(s.timesteps, [
    999, 997, 995, 993, 990, 988, 985, 982, 979, 976, 972, 969, 965, 961, 956, 952, 947, 941, 936, 929,
    922, 915, 907, 898, 888, 877, 865, 852, 837, 819, 799, 776, 749, 717, 678, 631, 571, 492, 386, 235,
  ]);
  assert.equal(boundarySwitchStep(s.timesteps, 0.875), 26);
});

test("spec: I2V 40 steps shift 5 gives 15 high-noise steps", () => {
  const s = makeSchedule("wan", 40, 5.0);
  assert.deepEqual(s.timesteps.slice(0, 18), [999, 994, 989, 983, 978, 972, 965, 959, 952, 944, 937, 929, 920, 911, 902, 892, 882, 870]);
  assert.deepEqual(s.timesteps.slice(-2), [208, 113]);
  assert.equal(boundarySwitchStep(s.timesteps, 0.9), 15);
});

test("spec: simple at 40 steps shift 12 starts at 1.0 then 0.997868", () => {
  const s = makeSchedule("simple", 40, 12.0);
  assert.equal(s.sigmas[0], 1);
  assert.ok(Math.abs(s.sigmas[1] - 0.997868) < 1e-6);
  assert.equal(s.sigmas[40], 0);
});

test("the simple table ends at sigma 1 and is increasing", () => {
  const t = comfyFlowSigmaTable(8.0);
  assert.equal(t.length, 1000);
  assert.equal(t[999], 1);
  for (let i = 1; i < t.length; i++) assert.ok(t[i] > t[i - 1]);
});
