// Following model chains to the loader and to a ModelSampling* shift, for both sampler nodes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { resolveShift, samplerInputs, upstreamModelName, upstreamShift } from "../wan22duo_graph.js";

// A tiny stand-in for LiteGraph nodes: inputs with links, widgets, getInputNode(slot).
function node(id, type, widgets = {}, inputs = []) {
  const n = {
    id, type, comfyClass: type,
    widgets: Object.entries(widgets).map(([name, value]) => ({ name, value })),
    inputs: inputs.map(([name, kind, origin]) => ({ name, type: kind, link: origin ? 1 : null, origin })),
  };
  n.getInputNode = (slot) => n.inputs[slot]?.origin ?? null;
  return n;
}

function modelSampler(high, low, shift = -1) {
  return node(100, "Wan22DuoModelSampler", { steps: 40, shift, boundary: -1, switch_step: -1, scheduler: "wan" },
    [["high_noise_model", "MODEL", high], ["positive", "CONDITIONING", null], ["low_noise_model", "MODEL", low]]);
}

test("the file name behind a MODEL chain: UNETLoader / UnetLoaderGGUF through LoRA and patch nodes", () => {
  const unet = node(1, "UNETLoader", { unet_name: "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", weight_dtype: "default" });
  const lora = node(2, "LoraLoaderModelOnly", { lora_name: "x.safetensors", strength_model: 1 }, [["model", "MODEL", unet]]);
  const sd3 = node(3, "ModelSamplingSD3", { shift: 8 }, [["model", "MODEL", lora]]);
  const gguf = node(4, "UnetLoaderGGUF", { unet_name: "Wan2.2-T2V-A14B-LowNoise-Q4_K_M.gguf" });
  const sampler = modelSampler(sd3, gguf);
  assert.equal(upstreamModelName(sampler, "high_noise_model"), "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors");
  assert.equal(upstreamModelName(sampler, "low_noise_model"), "Wan2.2-T2V-A14B-LowNoise-Q4_K_M.gguf");
  assert.equal(upstreamShift(sampler, "high_noise_model"), 8);
  assert.equal(upstreamShift(sampler, "low_noise_model"), null);
  assert.equal(samplerInputs(sampler, "t2v_a14b").hasLow, true);
  assert.equal(upstreamShift(modelSampler(null, null), "high_noise_model"), null);
});

test("the nearest ModelSampling node wins, as each patch replaces the one before", () => {
  const unet = node(1, "UNETLoader", { unet_name: "a.safetensors" });
  const first = node(2, "ModelSamplingSD3", { shift: 3 }, [["model", "MODEL", unet]]);
  const second = node(3, "ModelSamplingSD3", { shift: 5 }, [["model", "MODEL", first]]);
  assert.equal(upstreamShift(modelSampler(second, null), "high_noise_model"), 5);
});

test("shift -1 resolves as nodes/comfy_model.py does", () => {
  assert.deepEqual(resolveShift(7, "t2v_a14b", 8, 8), { shift: 7, source: "sampler" });
  assert.deepEqual(resolveShift(-1, "t2v_a14b", 8, 8), { shift: 8, source: "ModelSamplingSD3" });
  assert.deepEqual(resolveShift(-1, "t2v_a14b", null, 3), { shift: 3, source: "ModelSamplingSD3" });
  assert.deepEqual(resolveShift(-1, "t2v_a14b", null, null), { shift: 12, source: "official" });
  assert.deepEqual(resolveShift(-1, "i2v_a14b", null, null), { shift: 5, source: "official" });
  assert.deepEqual(resolveShift(-1, "ti2v_5b", null, null), { shift: 5, source: "official" });
  assert.deepEqual(resolveShift(-1, null, null, null), { shift: 12, source: "official" }); // T2V assumed
  assert.match(resolveShift(-1, "t2v_a14b", 8, 5).error, /different ModelSamplingSD3 shifts \(8 and 5\)/);
});
