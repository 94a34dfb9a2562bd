// Wan 2.2 Duo: which model feeds the sampler? Official boundaries per variant, a file-name guess
// (same rules as nodes/routes.py) and a small cached client for GET /wan22duo/model_info.
//
// No DOM and no ComfyUI imports: the caller passes the fetch function, so node tests can use it.
// Safe to auto-load in the browser (no side effects at load time).

export const VARIANTS = Object.freeze(["t2v_a14b", "i2v_a14b", "ti2v_5b"]);
// Official switch boundaries (spec §1.3); TI2V-5B is one model and never switches.
export const OFFICIAL_BOUNDARY = Object.freeze({ t2v_a14b: 0.875, i2v_a14b: 0.9, ti2v_5b: null });
export const LABELS = Object.freeze({ t2v_a14b: "T2V-A14B", i2v_a14b: "I2V-A14B", ti2v_5b: "TI2V-5B" });
export const ROUTE = "/wan22duo/model_info";

const HIGH = /high[\s_.-]?noise|(^|[\s_.-])high([\s_.-]|$)/;
const LOW = /low[\s_.-]?noise|(^|[\s_.-])low([\s_.-]|$)/;

function baseName(name) {
  return String(name ?? "").split(/[\\/]/).pop().toLowerCase();
}

/** Variant from a file name alone, or null: the fallback when the server can't tell. */
export function guessVariant(name) {
  const base = baseName(name);
  if (base.includes("ti2v") || /(^|[^0-9.])5b/.test(base)) return "ti2v_5b";
  if (base.includes("i2v")) return "i2v_a14b";
  if (base.includes("t2v")) return "t2v_a14b";
  return null;
}

/** "high_noise", "low_noise", "single" (TI2V-5B) or "unknown", from the file name. */
export function guessRole(name, variant = null) {
  if (variant === "ti2v_5b") return "single";
  const base = baseName(name);
  const high = HIGH.test(base);
  const low = LOW.test(base);
  if (high !== low) return high ? "high_noise" : "low_noise";
  return "unknown";
}

/** Same shape as the route's answer, built from a known variant. */
export function describe(variant, name, source) {
  return {
    name,
    variant,
    label: LABELS[variant],
    role: guessRole(name, variant),
    boundary: OFFICIAL_BOUNDARY[variant],
    source,
  };
}

/** The file-name fallback for `name`, or null when the name says nothing. */
export function infoFromName(name) {
  const variant = guessVariant(name);
  return variant ? describe(variant, name, "name") : null;
}

function validInfo(body) {
  return body && typeof body === "object" && VARIANTS.includes(body.variant) ? body : null;
}

/**
 * A cached client. `fetchJson(url)` resolves to `{status, body}` (body null if not JSON) or
 * rejects. `get(name)` answers at once: the server's answer once it arrived, else the file-name
 * guess (or null), and starts one request per name; `onUpdate(name, info)` runs when an answer
 * lands. Failures (route missing, file unreadable) settle on the guess; nothing throws.
 */
export function createModelInfoClient(fetchJson, onUpdate = () => {}) {
  const cache = new Map();

  async function load(name) {
    let info = null;
    try {
      const { body } = await fetchJson(`${ROUTE}?name=${encodeURIComponent(name)}`);
      // {variant: null, error, guess} when the server could not read the file.
      info = validInfo(body) ?? validInfo(body?.guess);
    } catch {
      info = null; // route unavailable (older install, no server): keep the guess
    }
    const settled = info ?? infoFromName(name);
    cache.set(name, { pending: false, info: settled });
    try {
      onUpdate(name, settled);
    } catch {
      // a redraw hook must not break the cache
    }
  }

  return {
    get(name) {
      if (!name || typeof name !== "string") return null;
      const hit = cache.get(name);
      if (hit) return hit.info;
      const guess = infoFromName(name);
      cache.set(name, { pending: true, info: guess });
      load(name);
      return guess;
    },
    clear() {
      cache.clear();
    },
  };
}
