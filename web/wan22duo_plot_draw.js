// Wan 2.2 Duo: draws the switch plot (sigma curve over the steps, colored by expert, the boundary,
// the switch, a caption) with the plain Canvas 2D API. No ComfyUI imports; tests drive it with a
// recording context. Auto-loaded by ComfyUI, so no side effects at load time.

export const PLOT_HEIGHT = 156;
export const COLORS = Object.freeze({
  high: "#f0a43a", // high-noise expert
  low: "#5aa9e6", // low-noise expert
  highFill: "rgba(240,164,58,0.13)",
  lowFill: "rgba(90,169,230,0.13)",
  reported: "#ff6fa0", // the switch step the last run reported, when it differs
  error: "#ff7b6b",
  warning: "#ffb36b",
  errorOnLight: "#b3261e", // the same on a light palette, where the light ones wash out
  warningOnLight: "#9a5800",
});

/** Whether a CSS hex colour ("#rgb" or "#rrggbb") is light (relative luminance above 0.5). */
export function isLight(color) {
  const hex = String(color ?? "").trim().replace(/^#/, "");
  const full = hex.length === 3 ? [...hex].map((c) => c + c).join("") : hex;
  if (!/^[0-9a-f]{6}$/i.test(full)) return false;
  const [r, g, b] = [0, 2, 4].map((i) => parseInt(full.slice(i, i + 2), 16) / 255);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5;
}

/** The error and warning colours readable on the plot's background. */
export function messageColors(background) {
  return isLight(background)
    ? { error: COLORS.errorOnLight, warning: COLORS.warningOnLight }
    : { error: COLORS.error, warning: COLORS.warning };
}
const DEFAULT_THEME = { background: "#222", outline: "#666", text: "#ddd", dim: "#999" };
const MARGIN = 15; // LiteGraph's widget side margin
const CAPTION_LINES = 3; // who runs which steps; boundary (or a warning); shift and the last run
const LINE_HEIGHT = 14;
const MESSAGE_LINE_HEIGHT = 13;
const BOTTOM_PAD = 6; // kept free under the plot when it fills the node

function call(ctx, method, ...args) {
  if (typeof ctx[method] === "function") ctx[method](...args);
}

function fitText(ctx, text, maxWidth) {
  if (typeof ctx.measureText !== "function" || maxWidth <= 0) return text;
  if (ctx.measureText(text).width <= maxWidth) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ctx.measureText(text.slice(0, mid) + "…").width <= maxWidth) lo = mid;
    else hi = mid - 1;
  }
  return text.slice(0, lo) + "…";
}

function widthOf(ctx, str, size) {
  if (typeof ctx.measureText === "function") return ctx.measureText(str).width;
  return str.length * size * 0.6;
}

/**
 * Greedy word wrap of `str` into at most `maxLines` lines no wider than `maxWidth` (measured with
 * the context's current font). A word wider than a line is broken; text beyond the last line is
 * cut there with an ellipsis.
 */
export function wrapText(ctx, str, maxWidth, maxLines) {
  const words = String(str ?? "").split(/\s+/).filter(Boolean);
  if (maxLines < 1 || words.length === 0) return [];
  if (typeof ctx.measureText !== "function" || !(maxWidth > 0)) return [words.join(" ")];
  const fits = (s) => ctx.measureText(s).width <= maxWidth;
  const lines = [];
  let current = "";
  for (let i = 0; i < words.length; i++) {
    let word = words[i];
    const joined = current ? `${current} ${word}` : word;
    if (fits(joined)) {
      current = joined;
      continue;
    }
    if (current) lines.push(current);
    while (!fits(word) && word.length > 1) {  // a single word wider than the line: break it
      let cut = word.length - 1;
      while (cut > 1 && !fits(word.slice(0, cut))) cut--;
      lines.push(word.slice(0, cut));
      word = word.slice(cut);
    }
    current = word;
    if (lines.length >= maxLines) {
      const rest = [...lines.slice(maxLines - 1), current, ...words.slice(i + 1)].join(" ");
      return [...lines.slice(0, maxLines - 1), fitText(ctx, rest, maxWidth)];
    }
  }
  if (current) lines.push(current); // at most maxLines: the loop returned once they were full
  return lines;
}

/**
 * Height to draw the plot with: PLOT_HEIGHT, or down to the node's bottom edge when the plot is
 * the node's last widget and the node is taller (a resized or restored node), so no empty band
 * is left under the plot.
 */
export function plotHeight(nodeHeight, top, isLastWidget) {
  if (!isLastWidget || !Number.isFinite(nodeHeight) || !Number.isFinite(top)) return PLOT_HEIGHT;
  return Math.max(PLOT_HEIGHT, Math.floor(nodeHeight - top - BOTTOM_PAD));
}

/**
 * The plot's height for one draw call. Nodes 2.0 gives the widget a canvas of its own, sized to
 * computeSize, and passes that height: the plot must fit inside it. The classic canvas passes the
 * row height (LiteGraph.NODE_WIDGET_HEIGHT, meaningless for a tall widget) and lays the plot out
 * from computeSize, so it gets PLOT_HEIGHT, or down to the node's bottom edge (plotHeight).
 */
export function plotBoxHeight({ ownCanvas, given, nodeHeight, top, isLastWidget }) {
  if (ownCanvas) return Number.isFinite(given) && given > 0 ? given : PLOT_HEIGHT;
  return plotHeight(nodeHeight, top, isLastWidget);
}

// Nodes 2.0 (frontend 1.33, WidgetLegacy) places a widget's own canvas 13 px above its row
// (class "mt-[-13px]"), over the bottom of the widget row before it.
export const OWN_CANVAS_OVERLAP = 13;

/**
 * The box to draw the plot in: on a Nodes 2.0 canvas, the given height less the strip the
 * frontend lays over the row above (left empty, so that row stays readable); on the classic
 * canvas, from the widget's y down to plotBoxHeight.
 */
export function plotBox({ ownCanvas, given, nodeHeight, top, isLastWidget, width }) {
  const height = plotBoxHeight({ ownCanvas, given, nodeHeight, top, isLastWidget });
  if (!ownCanvas) return { x: 0, y: top, width, height };
  const y = Math.max(top, OWN_CANVAS_OVERLAP);
  return { x: 0, y, width, height: Math.max(0, height - (y - top)) };
}

/** "shift 8 from ModelSamplingSD3", "shift 12 (official, T2V-A14B)", "shift 5": which shift the plan used. */
export function shiftText(shift) {
  if (!shift || !Number.isFinite(shift.value)) return null;
  const value = `shift ${Number(shift.value.toFixed(3))}`;
  if (shift.source === "ModelSamplingSD3") return `${value} from ModelSamplingSD3`;
  if (shift.source === "official") return `${value} (official${shift.label ? `, ${shift.label}` : ""}; shift -1)`;
  return `${value} (sampler)`;
}

function frame(ctx, x, y, w, h, theme) {
  ctx.fillStyle = theme.background;
  ctx.strokeStyle = theme.outline;
  ctx.lineWidth = 1;
  call(ctx, "beginPath");
  if (typeof ctx.roundRect === "function") ctx.roundRect(x, y, w, h, 6);
  else call(ctx, "rect", x, y, w, h);
  call(ctx, "fill");
  call(ctx, "stroke");
}

function line(ctx, x1, y1, x2, y2, color, width = 1, dash = null) {
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  call(ctx, "setLineDash", dash ?? []);
  call(ctx, "beginPath");
  call(ctx, "moveTo", x1, y1);
  call(ctx, "lineTo", x2, y2);
  call(ctx, "stroke");
  call(ctx, "setLineDash", []);
}

function text(ctx, str, x, y, color, size, align = "left", maxWidth = Infinity) {
  ctx.fillStyle = color;
  ctx.font = `${size}px sans-serif`;
  ctx.textAlign = align;
  ctx.textBaseline = "alphabetic";
  call(ctx, "fillText", fitText(ctx, str, maxWidth), x, y);
}

/** Maps step index (0..steps) and curve value (0..1, sigma or t/1000) to canvas pixels. */
function axes(area, steps) {
  return {
    x: (i) => area.x + (steps > 0 ? (i / steps) * area.w : 0),
    y: (v) => area.y + (1 - Math.min(1, Math.max(0, v))) * area.h,
  };
}

function drawRegions(ctx, area, ax, k, steps) {
  const split = ax.x(k);
  ctx.fillStyle = COLORS.highFill;
  call(ctx, "fillRect", area.x, area.y, split - area.x, area.h);
  ctx.fillStyle = COLORS.lowFill;
  call(ctx, "fillRect", split, area.y, area.x + area.w - split, area.h);
}

/** One stroke through points first..last of the curve (one path, even for thousands of steps). */
function polyline(ctx, ax, sigmas, first, last, color) {
  if (last <= first) return;
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  call(ctx, "setLineDash", []);
  call(ctx, "beginPath");
  call(ctx, "moveTo", ax.x(first), ax.y(sigmas[first]));
  // About two points per pixel: the curve is monotone, so skipping in between loses nothing.
  const stride = Math.max(1, Math.floor((last - first) / Math.max(1, 2 * (ax.x(last) - ax.x(first)))));
  for (let i = first + stride; i < last; i += stride) call(ctx, "lineTo", ax.x(i), ax.y(sigmas[i]));
  call(ctx, "lineTo", ax.x(last), ax.y(sigmas[last]));
  call(ctx, "stroke");
}

function drawCurve(ctx, ax, sigmas, k, steps, dots) {
  // Step i runs from sigma i to sigma i+1 on the expert that owns step i.
  polyline(ctx, ax, sigmas, 0, k, COLORS.high);
  polyline(ctx, ax, sigmas, k, steps, COLORS.low);
  if (!dots) return;
  for (let i = 0; i < steps; i++) {
    ctx.fillStyle = i < k ? COLORS.high : COLORS.low;
    call(ctx, "beginPath");
    call(ctx, "arc", ax.x(i), ax.y(sigmas[i]), 2.2, 0, 2 * Math.PI);
    call(ctx, "fill");
  }
}

/** The curve's canvas y at canvas x (linear between steps), for keeping labels off it. */
function curveYAt(ax, area, sigmas, steps, px) {
  if (!(steps > 0)) return ax.y(0);
  const at = Math.min(steps, Math.max(0, ((px - area.x) / area.w) * steps));
  const i = Math.min(steps - 1, Math.floor(at));
  const f = at - i;
  return ax.y(sigmas[i] * (1 - f) + sigmas[i + 1] * f);
}

/** Whether the curve passes through the box [x0, x1] x [top, bottom] (checked every 2 px). */
function crossesCurve(ax, area, sigmas, steps, x0, x1, top, bottom) {
  for (let px = x0; px <= x1 + 1; px += 2) {
    const cy = curveYAt(ax, area, sigmas, steps, Math.min(px, x1));
    if (cy >= top - 2 && cy <= bottom + 2) return true;
  }
  return false;
}

/**
 * Where the boundary label goes: {x, y, align}. Tries left/right of the plot, under/over the
 * line, and takes the first spot clear of the curve and of the switch line (left side only
 * before the switch). Falls back to under the line on the left.
 */
export function placeBoundaryLabel(ctx, area, ax, sigmas, steps, boundary, switchX, label) {
  const y = ax.y(boundary);
  const width = widthOf(ctx, label, 10);
  const below = Math.min(y + 11, area.y + area.h - 2);
  const above = Math.max(y - 3, area.y + 9);
  const spots = [
    { x: area.x + 3, y: below, align: "left" },
    { x: area.x + 3, y: above, align: "left" },
    { x: area.x + area.w - 3, y: above, align: "right" },
    { x: area.x + area.w - 3, y: below, align: "right" },
  ];
  for (const spot of spots) {
    const x0 = spot.align === "left" ? spot.x : spot.x - width;
    const x1 = x0 + width;
    if (spot.align === "left" && x1 + 3 > switchX) continue;
    if (!crossesCurve(ax, area, sigmas, steps, x0, x1, spot.y - 8, spot.y + 2)) return spot;
  }
  return spots[0];
}

function drawBoundary(ctx, area, ax, boundary, switchX, color, lowQuality, sigmas, steps) {
  if (!(boundary >= 0 && boundary <= 1)) return;
  const y = ax.y(boundary);
  line(ctx, area.x, y, area.x + area.w, y, color, 1, [4, 3]);
  if (lowQuality) return;
  const label = `boundary ${boundary}`;
  ctx.font = "10px sans-serif";
  const spot = placeBoundaryLabel(ctx, area, ax, sigmas, steps, boundary, switchX, label);
  text(ctx, label, spot.x, spot.y, color, 10, spot.align);
}

function drawMessage(ctx, x, y, w, h, title, message, theme) {
  const textWidth = w - 16;
  const first = y + 8 + 12;
  text(ctx, title, x + 8, first, theme.text, 12, "left", textWidth);
  ctx.font = "10px sans-serif";
  const maxLines = Math.max(1, Math.floor((y + h - 6 - (first + MESSAGE_LINE_HEIGHT)) / MESSAGE_LINE_HEIGHT) + 1);
  wrapText(ctx, message, textWidth, maxLines).forEach((row, i) => {
    text(ctx, row, x + 8, first + (i + 1) * MESSAGE_LINE_HEIGHT, messageColors(theme.background).error, 10, "left",
      textWidth);
  });
}

function drawSwitch(ctx, area, ax, k, steps, color, dash, label, lowQuality, labelRow = 0) {
  if (!(k > 0 && k < steps)) return;
  const x = ax.x(k);
  line(ctx, x, area.y, x, area.y + area.h, color, 1.5, dash);
  // At the bottom, where the (decreasing) curve has already dropped away on the right.
  if (!lowQuality && label) {
    const right = x > area.x + area.w * 0.7;
    text(ctx, label, right ? x - 3 : x + 3, area.y + area.h - 3 - labelRow * 11, color, 10, right ? "right" : "left");
  }
}

/** What the last run reported, relative to the current plan; null when there is nothing to say. */
export function reportedNote(plan, reported) {
  if (!reported || !Number.isInteger(reported.switch_step)) return null;
  const steps = plan?.schedule?.steps;
  if (reported.steps === steps && reported.switch_step === plan?.switchStep) {
    return `last run: switch at ${reported.switch_step} ✓`;
  }
  return `last run: switch at ${reported.switch_step} of ${reported.steps} (settings changed)`;
}

/**
 * Draw into box {x, y, width, height}. view = {plan, reported, lowQuality, shift}; shift is
 * {value, source, label} (see shiftText) or absent; theme colors are
 * optional. Never throws on odd input: a plan with an error is drawn as its message.
 */
export function drawSwitchPlot(ctx, box, view, theme = DEFAULT_THEME) {
  const t = { ...DEFAULT_THEME, ...theme };
  const plan = view?.plan;
  const lowQuality = !!view?.lowQuality;
  const x = box.x + MARGIN;
  const w = box.width - 2 * MARGIN;
  const y = box.y + 2;
  const h = box.height - 4;
  if (!(w > 20 && h > 40)) return;
  call(ctx, "save");
  frame(ctx, x, y, w, h, t);
  const captionTop = y + h - CAPTION_LINES * LINE_HEIGHT - 4;
  const area = { x: x + 8, y: y + 8, w: w - 16, h: captionTop - (y + 8) - 4 };
  const textWidth = w - 16;
  if (!plan || plan.error || !plan.schedule) {
    // The whole plot is free: wrap the message over as many lines as fit, so it is read in full.
    const message = plan?.error ? `⚠ ${plan.error}` : "waiting for the node's values";
    drawMessage(ctx, x, y, w, h, "Expert switch", message, t);
    call(ctx, "restore");
    return;
  }
  const { sigmas, steps } = plan.schedule;
  const k = plan.switchStep;
  const ax = axes(area, steps);
  if (!plan.single) drawRegions(ctx, area, ax, k, steps);
  else {
    ctx.fillStyle = COLORS.highFill;
    call(ctx, "fillRect", area.x, area.y, area.w, area.h);
  }
  line(ctx, area.x, area.y + area.h, area.x + area.w, area.y + area.h, t.outline, 1);
  if (!plan.single) drawBoundary(ctx, area, ax, plan.boundary, ax.x(k), t.dim, lowQuality, sigmas, steps);
  drawCurve(ctx, ax, sigmas, k, steps, !lowQuality && steps <= 60);
  if (!plan.single) drawSwitch(ctx, area, ax, k, steps, t.text, null, `switch ${k}`, lowQuality);
  const run = view?.reported;
  const runNote = reportedNote(plan, run);
  if (run && run.steps === steps && run.switch_step !== k && !plan.single) {
    drawSwitch(ctx, area, ax, run.switch_step, steps, COLORS.reported, [3, 3], `last run ${run.switch_step}`, lowQuality, 1);
  }
  if (!lowQuality) {
    text(ctx, plan.caption, x + 8, captionTop + LINE_HEIGHT - 2, t.text, 12, "left", textWidth);
    const second = plan.warning ?? plan.note;
    const color = plan.warning ? messageColors(t.background).warning : t.dim;
    text(ctx, second ?? "", x + 8, captionTop + 2 * LINE_HEIGHT - 2, color, 10, "left", textWidth);
    const third = [shiftText(view?.shift), runNote].filter(Boolean).join(" · ");
    if (third) text(ctx, third, x + 8, captionTop + 3 * LINE_HEIGHT - 2, t.dim, 10, "left", textWidth);
  }
  call(ctx, "restore");
}
