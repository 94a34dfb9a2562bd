// The plot drawing and the graph helpers, driven with a recording canvas context and plain
// objects standing in for LiteGraph nodes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { parseReport, samplerInputs, upstreamModelName } from "../wan22duo_graph.js";
import { COLORS, PLOT_HEIGHT, drawSwitchPlot, reportedNote } from "../wan22duo_plot_draw.js";
import { planSwitch } from "../wan22duo_switch_plan.js";

/** A 2D context that records calls; any method it lacks would throw in the code under test. */
function recordingContext({ withRoundRect = true } = {}) {
  const calls = [];
  const ctx = {
    calls,
    texts: () => calls.filter((c) => c[0] === "fillText").map((c) => c[1]),
    strokesIn: (color) => calls.filter((c) => c[0] === "stroke" && c.style === color).length,
  };
  const methods = ["save", "restore", "beginPath", "moveTo", "lineTo", "stroke", "fill", "fillRect", "rect",
    "arc", "setLineDash", "fillText"];
  if (withRoundRect) methods.push("roundRect");
  for (const m of methods) {
    ctx[m] = (...args) => {
      const entry = [m, ...args];
      entry.style = m === "stroke" ? ctx.strokeStyle : ctx.fillStyle;
      calls.push(entry);
    };
  }
  ctx.measureText = (s) => ({ width: s.length * 6 });
  return ctx;
}

const box = { x: 0, y: 100, width: 400, height: PLOT_HEIGHT };
const t2v = planSwitch({ scheduler: "wan", steps: 40, shift: 12, boundary: -1, switchStep: -1, variant: "t2v_a14b" });

test("draws the curve in both expert colors, the caption and the note", () => {
  const ctx = recordingContext();
  drawSwitchPlot(ctx, box, { plan: t2v });
  const texts = ctx.texts();
  assert.ok(texts.includes("high-noise steps 1–26, low-noise 27–40"), texts.join(" | "));
  assert.ok(texts.some((s) => s.startsWith("boundary 0.875")));
  assert.ok(texts.includes("switch 26"));
  // One high-noise stroke over steps 1-26 and one low-noise stroke over 27-40 (41 sigmas).
  assert.equal(ctx.strokesIn(COLORS.high), 1);
  assert.equal(ctx.strokesIn(COLORS.low), 1);
  const curveLineTos = ctx.calls.filter((c) => c[0] === "lineTo").length;
  assert.equal(curveLineTos, 26 + 14 + 3, "26 + 14 curve segments, plus the base, boundary and switch lines");
  // Balanced save/restore, and everything inside the box.
  const saves = ctx.calls.filter((c) => c[0] === "save").length;
  assert.equal(saves, ctx.calls.filter((c) => c[0] === "restore").length);
  for (const c of ctx.calls.filter((c) => ["moveTo", "lineTo", "fillText"].includes(c[0]))) {
    const [x, y] = c[0] === "fillText" ? [c[2], c[3]] : [c[1], c[2]];
    assert.ok(x >= box.x && x <= box.x + box.width && y >= box.y && y <= box.y + box.height, JSON.stringify(c));
  }
});

test("a different switch from the last run is marked", () => {
  const ctx = recordingContext();
  const reported = { switch_step: 20, steps: 40, boundary: 0.9, sigmas: [], timesteps: [] };
  drawSwitchPlot(ctx, box, { plan: t2v, reported });
  assert.ok(ctx.texts().includes("last run 20"));
  assert.match(reportedNote(t2v, reported), /settings changed/);
  assert.equal(reportedNote(t2v, { ...reported, switch_step: 26 }), "last run: switch at 26 ✓");
  assert.equal(reportedNote(t2v, null), null);
});

test("errors, single models and odd boxes draw without throwing", () => {
  const cases = [
    planSwitch({ scheduler: "wan", steps: 0, shift: 5, boundary: -1, switchStep: -1 }),
    planSwitch({ scheduler: "simple", steps: 50, shift: 5, boundary: -1, switchStep: -1, variant: "ti2v_5b" }),
    planSwitch({ scheduler: "wan", steps: 1, shift: 5, boundary: 1, switchStep: -1, variant: "i2v_a14b" }),
    planSwitch({ scheduler: "simple", steps: 1200, shift: 3, boundary: 0.5, switchStep: -1, variant: "t2v_a14b" }),
    null,
    {},
  ];
  for (const plan of cases) {
    for (const b of [box, { x: 0, y: 0, width: 10, height: 10 }, { x: 5, y: 5, width: 300, height: 60 }]) {
      for (const lowQuality of [false, true]) {
        drawSwitchPlot(recordingContext({ withRoundRect: false }), b, { plan, lowQuality });
      }
    }
  }
  const ctx = recordingContext();
  drawSwitchPlot(ctx, box, { plan: cases[0] });
  assert.ok(ctx.texts().some((s) => s.startsWith("⚠ steps must be a positive integer")));
  const single = recordingContext();
  drawSwitchPlot(single, box, { plan: cases[1] });
  assert.ok(single.texts().includes("single model: steps 1–50"));
  assert.equal(single.strokesIn(COLORS.low), 0);
});

test("long captions are shortened to fit", () => {
  const ctx = recordingContext();
  drawSwitchPlot(ctx, { x: 0, y: 0, width: 120, height: PLOT_HEIGHT }, { plan: t2v });
  for (const s of ctx.texts()) assert.ok(s.length * 6 <= 120, s);
});

// ---------------------------------------------------------------- graph helpers

function fakeNode(id, { widgets = {}, inputs = [], origins = {} } = {}) {
  return {
    id,
    widgets: Object.entries(widgets).map(([name, value]) => ({ name, value })),
    inputs,
    getInputNode: (slot) => origins[slot] ?? null,
  };
}

test("finds the loader file through a LoRA loader and a reroute", () => {
  const loader = fakeNode(1, { widgets: { unet_name: "wan2.2_i2v_high_noise_14B_fp16.safetensors", role: "auto" } });
  const lora = fakeNode(2, {
    widgets: { lora_name: "x.safetensors", strength: 1 },
    inputs: [{ name: "model", type: "WAN22DUO_MODEL", link: 5 }],
    origins: { 0: loader },
  });
  const reroute = fakeNode(3, { inputs: [{ name: "", type: "*", link: 6 }], origins: { 0: lora } });
  const sampler = fakeNode(4, {
    inputs: [{ name: "high_noise_model", type: "WAN22DUO_MODEL", link: 7 }, { name: "low_noise_model", link: null }],
    origins: { 0: reroute },
  });
  assert.equal(upstreamModelName(sampler, "high_noise_model"), "wan2.2_i2v_high_noise_14B_fp16.safetensors");
  assert.equal(upstreamModelName(sampler, "low_noise_model"), null);
  assert.equal(upstreamModelName(sampler, "missing"), null);
});

test("cycles and dead ends give null", () => {
  const a = fakeNode(1, { inputs: [{ name: "model", type: "WAN22DUO_MODEL", link: 1 }] });
  const b = fakeNode(2, { inputs: [{ name: "model", type: "WAN22DUO_MODEL", link: 2 }], origins: { 0: a } });
  a.getInputNode = () => b;
  const sampler = fakeNode(3, { inputs: [{ name: "high_noise_model", link: 3 }], origins: { 0: a } });
  assert.equal(upstreamModelName(sampler, "high_noise_model"), null);
  const primitive = fakeNode(4, { widgets: { value: 3 } });
  const other = fakeNode(5, { inputs: [{ name: "high_noise_model", link: 4 }], origins: { 0: primitive } });
  assert.equal(upstreamModelName(other, "high_noise_model"), null);
});

test("sampler inputs and the run report", () => {
  const node = fakeNode(1, {
    widgets: { seed: 1, steps: 40, shift: 12, boundary: -1, switch_step: -1, scheduler: "wan" },
    inputs: [{ name: "high_noise_model", link: 1 }, { name: "low_noise_model", link: 2 }],
  });
  assert.deepEqual(samplerInputs(node, "t2v_a14b"), {
    scheduler: "wan", steps: 40, shift: 12, boundary: -1, switchStep: -1, variant: "t2v_a14b", hasLow: true,
  });
  assert.equal(samplerInputs(fakeNode(2), undefined).hasLow, null);
  const report = { switch_step: 26, steps: 40, boundary: 0.875, sigmas: [1, 0], timesteps: [999] };
  assert.deepEqual(parseReport({ wan22duo_switch: [report] }), report);
  assert.equal(parseReport({}), null);
  assert.equal(parseReport({ wan22duo_switch: [{ switch_step: "x" }] }), null);
  assert.equal(parseReport(undefined), null);
});

test("a cached run's reused steps are hollow dots and the note counts them (issue 23)", () => {
  const report = { switch_step: 26, steps: 40, boundary: 0.875, sigmas: [], timesteps: [],
    cache: { reused: [3, 4, 5, 30], threshold: 0.05 }, stages: [{ role: "high", start: 0, stop: 26 }] };
  const reported = parseReport({ wan22duo_switch: [report] });
  assert.deepEqual(reported.reused, [3, 4, 5, 30]);
  const ctx = recordingContext();
  drawSwitchPlot(ctx, box, { plan: t2v, reported });
  const arcs = ctx.calls.map((c, i) => [c, ctx.calls[i + 1]]).filter(([c]) => c[0] === "arc");
  assert.equal(arcs.length, 40);
  const hollow = arcs.filter(([, next]) => next[0] === "stroke").length;
  assert.equal(hollow, 4, "one hollow dot per reused step");
  assert.equal(arcs.length - hollow, 36);
  assert.ok(ctx.texts().some((s) => s.includes("36 of 40 steps ran, 4 reused")), ctx.texts().join(" | "));
  // A run on another grid marks nothing.
  const other = recordingContext();
  drawSwitchPlot(other, box, { plan: t2v, reported: { ...reported, steps: 20 } });
  assert.equal(other.calls.filter((c, i) => c[0] === "arc" && other.calls[i + 1][0] === "stroke").length, 0);
});

test("leading phases from the last run are drawn and counted (issue 23)", () => {
  const plan = planSwitch({ scheduler: "simple", steps: 8, shift: 5, boundary: -1, switchStep: -1, variant: "t2v_a14b" });
  const report = { switch_step: 4, steps: 8, boundary: 0.875, sigmas: [], timesteps: [],
    stages: [{ role: "lead1", start: 0, stop: 2, cfg: 3.5 }, { role: "high", start: 2, stop: 4, cfg: 1 },
      { role: "low", start: 4, stop: 8, cfg: 1 }] };
  const reported = parseReport({ wan22duo_switch: [report] });
  assert.deepEqual(reported.stages.map((s) => s.role), ["lead1", "high", "low"]);
  assert.equal(reportedNote(plan, reported), "last run: switch at 4 ✓, 1 leading phase");
  const ctx = recordingContext();
  drawSwitchPlot(ctx, box, { plan, reported });
  const dotted = ctx.calls.filter((c) => c[0] === "setLineDash" && c[1].length === 2 && c[1][0] === 1);
  assert.equal(dotted.length, 1, "one dotted line where the leading phase ends");
});
