// The pack's template cards sorted by file name; other packs untouched.
import assert from "node:assert/strict";
import { test } from "node:test";

import { packFromUrl, sortPackTemplates } from "../wan22duo_template_order.js";

test("the pack's folder comes from the extension's URL", () => {
  assert.equal(packFromUrl("http://127.0.0.1:8188/extensions/ComfyUI-Wan22Duo/wan22duo_templates.js"),
    "ComfyUI-Wan22Duo");
  assert.equal(packFromUrl("http://h/api/extensions/my%20pack/x.js"), "my pack");
  assert.equal(packFromUrl("http://h/scripts/app.js"), null);
  assert.equal(packFromUrl("not a url"), null);
});

test("only the pack's list is sorted, numbers first, key order kept", () => {
  const answer = {
    other: ["b", "a"],
    "ComfyUI-Wan22Duo": ["10 Wan 2.2 TI2V-5B text to video", "02 Wan 2.2 T2V-A14B Lightning 4 steps",
      "01 Wan 2.2 T2V-A14B text to video"],
  };
  const sorted = sortPackTemplates(answer, "ComfyUI-Wan22Duo");
  assert.deepEqual(sorted["ComfyUI-Wan22Duo"], ["01 Wan 2.2 T2V-A14B text to video",
    "02 Wan 2.2 T2V-A14B Lightning 4 steps", "10 Wan 2.2 TI2V-5B text to video"]);
  assert.deepEqual(sorted.other, ["b", "a"]);
  assert.deepEqual(Object.keys(sorted), ["other", "ComfyUI-Wan22Duo"]);
  assert.deepEqual(answer["ComfyUI-Wan22Duo"][0], "10 Wan 2.2 TI2V-5B text to video", "the answer is not changed");
});

test("unexpected answers pass through", () => {
  for (const answer of [null, undefined, [], "x", { other: ["a"] }, { "ComfyUI-Wan22Duo": "not a list" }]) {
    assert.equal(sortPackTemplates(answer, "ComfyUI-Wan22Duo"), answer);
  }
  assert.equal(sortPackTemplates({ a: ["y", "x"] }, null).a[0], "y");
});
