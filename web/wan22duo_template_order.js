// Wan 2.2 Duo: the order of the pack's cards in ComfyUI's template browser.
//
// The frontends (1.33, 1.49) list a pack's templates in the order GET /workflow_templates answers them,
// which is ComfyUI's unsorted glob of example_workflows/ (the file system's directory order), and title
// each card with its file name. The file names start with their place ("01 Wan 2.2 T2V-A14B text to
// video", scripts/template_cards.py), so sorting the pack's list by name gives the intended order.
// Pure, no ComfyUI imports: node tests import it; wan22duo_templates.js applies it in the browser.

/** The pack's folder name from this extension's URL: /extensions/<pack>/<file>.js, or null. */
export function packFromUrl(url) {
  try {
    const parts = new URL(url).pathname.split("/");
    const at = parts.indexOf("extensions");
    return at >= 0 && parts.length > at + 2 ? decodeURIComponent(parts[at + 1]) : null;
  } catch {
    return null;
  }
}

/**
 * A copy of the /workflow_templates answer ({pack folder: [template names]}) with `pack`'s names
 * sorted (by code unit, so "01 ..." < "02 ..." < "10 ..."); other packs, the key order and anything
 * unexpected are left as they are.
 */
export function sortPackTemplates(answer, pack) {
  if (!pack || !answer || typeof answer !== "object" || !Array.isArray(answer[pack])) return answer;
  const names = [...answer[pack]].sort((a, b) => (String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0));
  return { ...answer, [pack]: names };
}
