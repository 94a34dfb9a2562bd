// Layout fixes of the switch plot: long messages wrap, the boundary label keeps off the curve, and
// the plot fills a node that is taller than it needs.
import assert from "node:assert/strict";
import { test } from "node:test";

import { PLOT_HEIGHT, drawSwitchPlot, placeBoundaryLabel, plotHeight, wrapText } from "../wan22duo_plot_draw.js";
import { planSwitch } from "../wan22duo_switch_plan.js";

const CHAR = 6; // the fake font: every character 6 px wide
function recordingContext() {
  const calls = [];
  const ctx = { calls, texts: () => calls.filter((c) => c[0] === "fillText") };
  for (const m of ["save", "restore", "beginPath", "moveTo", "lineTo", "stroke", "fill", "fillRect", "rect", "arc",
    "setLineDash", "fillText", "roundRect"]) {
    ctx[m] = (...args) => calls.push([m, ...args]);
  }
  ctx.measureText = (s) => ({ width: s.length * CHAR });
  return ctx;
}

test("wrapText keeps every word, within the width, and ellipsizes past the last line", () => {
  const ctx = recordingContext();
  const message = "switch_step 57 is out of range: it must be -1 (from the boundary) or 0..40, the step index";
  const lines = wrapText(ctx, message, 20 * CHAR, 10);
  assert.ok(lines.length > 1);
  for (const line of lines) assert.ok(line.length * CHAR <= 20 * CHAR, line);
  assert.equal(lines.join(" "), message);
  const two = wrapText(ctx, message, 20 * CHAR, 2);
  assert.equal(two.length, 2);
  assert.ok(two[1].endsWith("…") && two[1].length <= 20, two[1]);
  const broken = wrapText(ctx, "x".repeat(50), 20 * CHAR, 5);  // one word wider than the line
  assert.deepEqual(broken.map((l) => l.length), [20, 20, 10]);
  assert.deepEqual(wrapText(ctx, "", 100, 3), []);
});

test("a long error is drawn in full on the plot, wrapped, not cut at the node's width", () => {
  const plan = planSwitch({ scheduler: "wan", steps: 40, shift: 12, boundary: -1, switchStep: 57, variant: "t2v_a14b" });
  assert.ok(plan.error && plan.error.length * CHAR > 400, plan.error);  // wider than the node
  const ctx = recordingContext();
  drawSwitchPlot(ctx, { x: 0, y: 0, width: 400, height: PLOT_HEIGHT }, { plan });
  const rows = ctx.texts().map((c) => c[1]).filter((s) => s !== "Expert switch");
  assert.ok(rows.length >= 2, rows.join(" | "));
  assert.equal(rows.join(" "), `⚠ ${plan.error}`);
  for (const c of ctx.texts()) {
    assert.ok(c[1].length * CHAR <= 400 - 2 * 15 - 16, c[1]);
    assert.ok(c[3] <= PLOT_HEIGHT, `row at y ${c[3]} is below the plot`);
  }
});

function layoutFor(plan, width = 400) {
  const x = 15 + 8;
  const area = { x, y: 2 + 8, w: width - 30 - 16, h: 100 };
  const ax = {
    x: (i) => area.x + (i / plan.schedule.steps) * area.w,
    y: (v) => area.y + (1 - Math.min(1, Math.max(0, v))) * area.h,
  };
  return { area, ax };
}

test("the boundary label moves off the curve when the switch is early and the curve is still high", () => {
  // switch_step 1 at shift 12: the switch line is at the far left, so the label goes right, where
  // the shifted curve still runs near the boundary. Under the line it would cross the curve.
  const plan = planSwitch({ scheduler: "wan", steps: 40, shift: 12, boundary: -1, switchStep: 1, variant: "t2v_a14b" });
  const { area, ax } = layoutFor(plan);
  const ctx = recordingContext();
  const label = `boundary ${plan.boundary}`;
  const spot = placeBoundaryLabel(ctx, area, ax, plan.schedule.sigmas, 40, plan.boundary, ax.x(1), label);
  const width = label.length * CHAR;
  const x0 = spot.align === "left" ? spot.x : spot.x - width;
  assert.ok(x0 > ax.x(1), "not across the switch line");
  const sigmaAt = (px) => {
    const at = ((px - area.x) / area.w) * 40;
    const i = Math.min(39, Math.floor(at));
    return plan.schedule.sigmas[i] + (plan.schedule.sigmas[i + 1] - plan.schedule.sigmas[i]) * (at - i);
  };
  for (let px = x0; px <= x0 + width; px += 1) {
    const cy = ax.y(sigmaAt(px));
    assert.ok(cy < spot.y - 10 || cy > spot.y + 4, `curve at x ${px} (y ${cy.toFixed(1)}) runs through the label`);
  }
  // The old spot (right, under the line) would have crossed it.
  const under = Math.min(ax.y(plan.boundary) + 11, area.y + area.h - 2);
  const crossed = [...Array(width).keys()].some((d) => {
    const cy = ax.y(sigmaAt(area.x + area.w - 3 - width + d));
    return cy >= under - 10 && cy <= under + 4;
  });
  assert.ok(crossed, "the test case must be one the old placement got wrong");
});

test("the default T2V plot keeps the label on the left, under the line", () => {
  const plan = planSwitch({ scheduler: "wan", steps: 40, shift: 12, boundary: -1, switchStep: -1, variant: "t2v_a14b" });
  const { area, ax } = layoutFor(plan);
  const spot = placeBoundaryLabel(recordingContext(), area, ax, plan.schedule.sigmas, 40, plan.boundary,
    ax.x(plan.switchStep), "boundary 0.875");
  assert.equal(spot.align, "left");
  assert.ok(spot.y > ax.y(plan.boundary));
});

test("the plot fills a taller node and keeps its height otherwise", () => {
  assert.equal(plotHeight(600, 300, true), 600 - 300 - 6);
  assert.equal(plotHeight(600, 300, false), PLOT_HEIGHT);  // another widget follows: keep to its own size
  assert.equal(plotHeight(400, 300, true), PLOT_HEIGHT);  // never below its own height
  assert.equal(plotHeight(undefined, 300, true), PLOT_HEIGHT);
  const ctx = recordingContext();
  const plan = planSwitch({ scheduler: "wan", steps: 40, shift: 12, boundary: -1, switchStep: -1, variant: "t2v_a14b" });
  drawSwitchPlot(ctx, { x: 0, y: 300, width: 400, height: plotHeight(700, 300, true) }, { plan });
  const caption = ctx.texts().find((c) => c[1].startsWith("high-noise steps"));
  assert.ok(caption[3] > 300 + PLOT_HEIGHT, "the caption sits at the bottom of the grown plot");
});

// Nodes 2.0 (Vue nodes) gives the plot a canvas of its own and passes its height; the plot must
// stay inside it whatever the node's size, caption and labels included (it used to size itself
// from the node and was cut mid-curve).
test("plotBoxHeight: the given height on an own canvas, the node's remaining height on the shared one", async () => {
  const { plotBoxHeight } = await import("../wan22duo_plot_draw.js");
  assert.equal(plotBoxHeight({ ownCanvas: true, given: 156, nodeHeight: 780, top: 1, isLastWidget: true }), 156);
  assert.equal(plotBoxHeight({ ownCanvas: true, given: 90, nodeHeight: 780, top: 1, isLastWidget: true }), 90);
  assert.equal(plotBoxHeight({ ownCanvas: true, given: undefined, nodeHeight: 780, top: 1, isLastWidget: true }),
    PLOT_HEIGHT);
  // Classic: LiteGraph passes the row height (20); the plot fills down to the node's bottom edge.
  assert.equal(plotBoxHeight({ ownCanvas: false, given: 20, nodeHeight: 700, top: 394, isLastWidget: true }),
    plotHeight(700, 394, true));
  assert.ok(plotHeight(700, 394, true) > PLOT_HEIGHT);
});

test("in a Nodes 2.0 canvas of the given height, every caption line and label is drawn inside it", async () => {
  const { plotBoxHeight, shiftText } = await import("../wan22duo_plot_draw.js");
  const plan = planSwitch({ scheduler: "wan", steps: 40, shift: 8, boundary: -1, switchStep: -1, variant: "t2v_a14b" });
  const shift = { value: 8, source: "ModelSamplingSD3" };
  for (const width of [220, 300, 420, 800]) {
    const ctx = recordingContext();
    const height = plotBoxHeight({ ownCanvas: true, given: PLOT_HEIGHT, nodeHeight: 2000, top: 1, isLastWidget: true });
    drawSwitchPlot(ctx, { x: 0, y: 1, width, height }, { plan, shift });
    const texts = ctx.texts();
    const caption = texts.find((c) => c[1] === plan.caption || c[1].startsWith("high-noise steps"));
    assert.ok(caption, `width ${width}: no caption in ${texts.map((c) => c[1]).join(" | ")}`);
    assert.ok(texts.some((c) => c[1].startsWith("shift 8")), texts.map((c) => c[1]).join(" | "));
    assert.ok(texts.some((c) => c[1].startsWith("switch ")), "the switch label");
    for (const c of ctx.calls.filter((c) => ["moveTo", "lineTo", "fillText", "fillRect"].includes(c[0]))) {
      const y = c[0] === "fillText" ? c[3] : c[2];
      assert.ok(y >= 1 && y <= 1 + height, `width ${width}: ${JSON.stringify(c)} is outside 1..${1 + height}`);
    }
  }
});

test("shiftText says which shift the plot used and where it came from", async () => {
  const { shiftText } = await import("../wan22duo_plot_draw.js");
  assert.equal(shiftText({ value: 8, source: "ModelSamplingSD3" }), "shift 8 from ModelSamplingSD3");
  assert.equal(shiftText({ value: 12, source: "official", label: "T2V-A14B" }), "shift 12 (official, T2V-A14B; shift -1)");
  assert.equal(shiftText({ value: 5, source: "sampler" }), "shift 5 (sampler)");
  assert.equal(shiftText(null), null);
  assert.equal(shiftText({ value: NaN, source: "sampler" }), null);
});

test("errors and warnings use dark colours on a light palette, light ones on a dark palette", async () => {
  const { COLORS: C, isLight, messageColors } = await import("../wan22duo_plot_draw.js");
  assert.equal(isLight("#222"), false);
  assert.equal(isLight("#ffffff"), true);
  assert.equal(isLight("#d4d4d4"), true);
  assert.equal(isLight("not a colour"), false);
  assert.deepEqual(messageColors("#222"), { error: C.error, warning: C.warning });
  assert.deepEqual(messageColors("#fafafa"), { error: C.errorOnLight, warning: C.warningOnLight });
  const plan = planSwitch({ scheduler: "wan", steps: 40, shift: 12, boundary: -1, switchStep: 57, variant: "t2v_a14b" });
  const ctx = recordingContext();
  const styles = [];
  const fillText = ctx.fillText;
  ctx.fillText = (...args) => { styles.push(ctx.fillStyle); return fillText(...args); };
  drawSwitchPlot(ctx, { x: 0, y: 0, width: 400, height: PLOT_HEIGHT }, { plan }, { background: "#f5f5f5" });
  assert.ok(styles.includes(C.errorOnLight) && !styles.includes(C.error), styles.join(" "));
});

test("on a Nodes 2.0 canvas the plot leaves the strip over the row above empty and ends inside the canvas", async () => {
  const { OWN_CANVAS_OVERLAP, plotBox } = await import("../wan22duo_plot_draw.js");
  const box = plotBox({ ownCanvas: true, given: PLOT_HEIGHT, nodeHeight: 900, top: 1, isLastWidget: true, width: 300 });
  assert.equal(box.y, OWN_CANVAS_OVERLAP);
  assert.equal(box.y + box.height, 1 + PLOT_HEIGHT);
  const plan = planSwitch({ scheduler: "wan", steps: 40, shift: 12, boundary: -1, switchStep: -1, variant: "t2v_a14b" });
  const ctx = recordingContext();
  drawSwitchPlot(ctx, box, { plan, shift: { value: 12, source: "sampler" } });
  for (const c of ctx.calls.filter((c) => ["moveTo", "lineTo", "fillText", "fillRect"].includes(c[0]))) {
    const y = c[0] === "fillText" ? c[3] - 10 : c[2]; // a text's top is about its size above the baseline
    assert.ok(y >= OWN_CANVAS_OVERLAP && y <= 1 + PLOT_HEIGHT, JSON.stringify(c));
  }
  // Classic: unchanged, from the widget's y.
  const classic = plotBox({ ownCanvas: false, given: 20, nodeHeight: 700, top: 394, isLastWidget: true, width: 300 });
  assert.deepEqual([classic.y, classic.height], [394, plotHeight(700, 394, true)]);
});
