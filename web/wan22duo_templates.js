// Wan 2.2 Duo: the pack's template cards in their intended order (see wan22duo_template_order.js).
//
// Wraps the frontend's api.getWorkflowTemplates, the one call its template store makes for the packs'
// lists, so that this pack's list comes back sorted by file name. Installed when this file loads
// (extensions load before the template browser can open); other packs' lists are untouched.
import { api } from "../../scripts/api.js";

import { packFromUrl, sortPackTemplates } from "./wan22duo_template_order.js";

const PACK = packFromUrl(import.meta.url);
const original = api?.getWorkflowTemplates;
if (PACK && typeof original === "function" && !original.wan22duoSorted) {
  const sorted = async function getWorkflowTemplates(...args) {
    return sortPackTemplates(await original.apply(this, args), PACK);
  };
  sorted.wan22duoSorted = true;
  api.getWorkflowTemplates = sorted;
}
