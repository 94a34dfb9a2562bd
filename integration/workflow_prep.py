"""Turn a bundled API workflow into one a CPU runs in seconds, and say which tiny files it needs.

Two steps, both pure (no ComfyUI, no server):

* :func:`needed_files` reads every loader / input node and returns a :class:`FileSpec` per file it
  references, under the exact file name the node asks for. ``LOADERS`` is the table of nodes we can
  write files for; a node that names a file (any string input ending in a model or media suffix) and
  is not in the table raises :class:`WorkflowPrepError` naming the node and the file, so a workflow
  with a new loader forces an update here instead of being skipped. :func:`write_file` writes a spec.
* :func:`shrink` returns a rewritten copy: the text encoder replaced (below), every node with integer
  ``width``/``height``/``length`` inputs set to 96 x 64 pixels, 5 frames (a node with only ``length``,
  which continues a clip, gets 5 or the shortest clip longer than its ``overlap``; an SVI continuation, whose
  size inputs are all set, the shortest clip longer than the 1 + 4k frames it repeats), and the steps of each
  Wan22Duo sampler cut to the fewest (from 4 up) that still switch experts inside the run when the
  original does. Schedule, solver, shift, boundary, CFG, seed and memory policy stay as bundled.
  A workflow with context windows (``Wan22DuoContextWindows``) gets windows of ``WINDOW_LENGTH``
  frames (3 latent frames) overlapping by 4 frames (1 latent frame) and a video of
  ``WINDOWED_LENGTH`` frames (5 latent frames), so the short run still splits into windows.

Text encoder: ``CLIPLoader(type="wan")`` builds the full umT5-XXL (5.7B parameters) whatever file it
is given, so no small one can exist. Every ``CLIPTextEncode`` becomes the test-only node
``Wan22DuoTestConditioning`` with the same prompt text and ``length`` 512 (ComfyUI pads umT5 output
to 512 rows, zero past the prompt); the text-encoder loaders (``CLIPLoader``, ``CLIPLoaderGGUF``) are
dropped. Anything else still linked to a dropped loader is an error.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import tiny_models

# class_type -> (input that names the file, ComfyUI folder ("input" = the input folder), kind of file)
LOADERS = {
    "Wan22DuoExpertLoader": ("unet_name", "diffusion_models", "dit"),
    "Wan22DuoTI2VLoader": ("unet_name", "diffusion_models", "dit"),
    "UNETLoader": ("unet_name", "diffusion_models", "dit"),
    "UnetLoaderGGUF": ("unet_name", "unet", "gguf"),
    "Wan22DuoVAELoader": ("vae_name", "vae", "vae"),
    "VAELoader": ("vae_name", "vae", "comfy_vae"),
    "Wan22DuoLoraLoader": ("lora_name", "loras", "lora"),
    "LoraLoaderModelOnly": ("lora_name", "loras", "lora"),
    "LoadImage": ("image", "input", "image"),
}
TEXT_ENCODER_LOADERS = ("CLIPLoader", "CLIPLoaderGGUF")
TEXT_ENCODERS = ("CLIPTextEncode",)
CONDITIONING_NODE = "Wan22DuoTestConditioning"
UMT5_LENGTH = 512
FILE_SUFFIX = re.compile(r"\.(safetensors|sft|gguf|ckpt|pt|pth|bin|png|jpe?g|webp|gif|mp4|webm)$", re.I)
WIDTH, HEIGHT, LENGTH = 96, 64, 5  # multiples of 32 (the 2.2 VAE's 16 px x the DiT's 2x2 patch); 2 latent frames
MIN_STEPS = 4
CONTEXT_WINDOWS = "Wan22DuoContextWindows"
WINDOW_LENGTH, WINDOW_OVERLAP, WINDOWED_LENGTH = 9, 4, 17  # latent frames: windows of 3, overlap 1, video of 5


class WorkflowPrepError(ValueError):
    """The workflow cannot be prepared for the tiny-model run; the message names the node and file."""


@dataclass(frozen=True)
class FileSpec:
    folder: str  # ComfyUI model folder, or "input"
    name: str  # the file name exactly as the workflow gives it
    kind: str  # dit | gguf | vae | lora | image
    variant: Optional[str] = None  # DiT, GGUF and LoRA: the Wan 2.2 variant it is for
    storage: Optional[str] = None  # DiT: engine.testing.tiny storage; GGUF: quantization
    version: Optional[str] = None  # VAE: "2.1" | "2.2"
    full_size: bool = False  # VAE: real widths (ComfyUI's VAELoader builds the 2.2 VAE at full size)

    def merged(self, other: "FileSpec") -> "FileSpec":
        """One file serving two workflows; a 2.2 VAE that ComfyUI's loader reads must be full size."""
        if replace(self, full_size=False) != replace(other, full_size=False):
            raise WorkflowPrepError(f"{self.folder}/{self.name} is needed as two different files: {self} and {other}")
        return replace(self, full_size=self.full_size or other.full_size)


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _where(api: dict, node_id: str) -> str:
    return f"node {node_id} ({api[node_id]['class_type']})"


def _upstream_dit(api: dict, node_id: str, seen: Optional[set] = None) -> Optional[str]:
    """The DiT / GGUF loader a MODEL output comes from, through LoRA and patch nodes (None: none found)."""
    seen = seen if seen is not None else set()
    if node_id in seen or node_id not in api:
        return None
    seen.add(node_id)
    node = api[node_id]
    if LOADERS.get(node["class_type"], (None, None, None))[2] in ("dit", "gguf"):
        return node_id
    links = [v for k, v in node["inputs"].items() if is_link(v) and "model" in k] or \
            [v for v in node["inputs"].values() if is_link(v)]
    for link in links:
        found = _upstream_dit(api, link[0], seen)
        if found is not None:
            return found
    return None


def model_variant(api: dict, link) -> str:
    """The variant of the model behind ``link`` (``[node_id, output]``), from its loader's file name."""
    loader = _upstream_dit(api, link[0])
    if loader is None:
        raise WorkflowPrepError(f"{_where(api, link[0])} is fed by no model loader that LOADERS knows")
    name_input = LOADERS[api[loader]["class_type"]][0]
    name = api[loader]["inputs"][name_input]
    variant = tiny_models.variant_from_name(name)
    if variant is None:
        raise WorkflowPrepError(f"{_where(api, loader)}: cannot tell the Wan 2.2 variant from the file name {name!r} "
                                "(expected t2v, i2v or ti2v/5B in it); rename it or teach tiny_models.variant_from_name")
    return variant


def needed_files(api: dict) -> list[FileSpec]:
    """Every file the workflow's loaders and inputs read, as tiny files to write (see the module doc)."""
    specs = []
    for node_id, node in api.items():
        class_type, inputs = node["class_type"], node["inputs"]
        if class_type in TEXT_ENCODER_LOADERS:
            continue  # replaced by shrink()
        if class_type not in LOADERS:
            for key, value in inputs.items():
                if isinstance(value, str) and FILE_SUFFIX.search(value):
                    raise WorkflowPrepError(
                        f"{_where(api, node_id)} reads the file {value!r} (input {key!r}), but the integration "
                        f"suite has no tiny writer for {class_type}: add it to LOADERS in integration/workflow_prep.py")
            continue
        key, folder, kind = LOADERS[class_type]
        name = inputs.get(key)
        if not isinstance(name, str):
            raise WorkflowPrepError(f"{_where(api, node_id)}: input {key!r} should name a file, got {name!r}")
        if kind in ("dit", "gguf"):
            variant = model_variant(api, [node_id, 0])
            storage = tiny_models.storage_from_name(name) if kind == "dit" else tiny_models.gguf_quant_from_name(name)
            specs.append(FileSpec(folder, name, kind, variant=variant, storage=storage))
        elif kind in ("vae", "comfy_vae"):
            version = tiny_models.vae_version_from_name(name)
            if version is None:
                raise WorkflowPrepError(f"{_where(api, node_id)}: cannot tell the Wan VAE version from {name!r} "
                                        "(expected 2.1 or 2.2 in the name)")
            specs.append(FileSpec(folder, name, "vae", version=version,
                                  full_size=kind == "comfy_vae" and version == "2.2"))
        elif kind == "lora":
            if not is_link(inputs.get("model")):
                raise WorkflowPrepError(f"{_where(api, node_id)}: LoRA {name!r} has no linked model input")
            specs.append(FileSpec(folder, name, "lora", variant=model_variant(api, inputs["model"])))
        else:
            specs.append(FileSpec(folder, name, "image"))
    return specs


def file_path(tree, spec: FileSpec) -> Path:
    if spec.folder == "input":
        path = tree.root / "input" / spec.name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    return tree.model_path(spec.folder, spec.name)


def write_file(tree, spec: FileSpec, scratch: Path) -> Path:
    """Write ``spec`` into the ComfyUI tree; ``scratch`` is a folder for helper files (a LoRA's base DiT)."""
    path = file_path(tree, spec)
    seed = tiny_models.seed_for(spec.name)
    if spec.kind == "dit":
        return tiny_models.write_dit(path, spec.variant, storage=spec.storage, seed=seed)
    if spec.kind == "gguf":
        return tiny_models.write_gguf_dit(path, spec.variant, quant=spec.storage, seed=seed)
    if spec.kind == "vae":
        return tiny_models.write_vae(path, spec.version, full_size=spec.full_size, seed=seed)
    if spec.kind == "lora":
        base = scratch / f"lora_base_{spec.variant}.safetensors"  # every tiny DiT of a variant has these shapes
        if not base.exists():
            tiny_models.write_dit(base, spec.variant, storage="fp32")
        return tiny_models.write_lora(path, base, seed=seed)
    if spec.kind == "image":
        return tiny_models.write_image(path, seed=seed)
    raise WorkflowPrepError(f"no writer for file kind {spec.kind!r} ({spec.name})")


# ------------------------------------------------------------------ rewriting


def is_duo_sampler(node: dict) -> bool:
    """Our samplers (Wan22DuoSampler and any sibling): steps, a scheduler and the switch_step override."""
    inputs = node["inputs"]
    return node["class_type"].startswith("Wan22Duo") and {"steps", "scheduler", "switch_step"} <= set(inputs)


def sampler_models(api: dict, node_id: str) -> tuple[list, Optional[list]]:
    """(link of the high-noise / only model, link of the low-noise expert or None) of a Duo sampler."""
    inputs = api[node_id]["inputs"]
    links = {k: v for k, v in inputs.items() if is_link(v) and "model" in k}
    high = [v for k, v in links.items() if not k.startswith("low")]
    low = [v for k, v in links.items() if k.startswith("low")]
    if len(high) != 1 or len(low) > 1:
        raise WorkflowPrepError(f"{_where(api, node_id)}: expected one high-noise (or single) model input and at "
                                f"most one low-noise one, got {sorted(links)}")
    return high[0], (low[0] if low else None)


def plan_for(engine_sampling, variant: str, has_low: bool, inputs: dict, steps: int, shift: float):
    """``engine.sampling.loop.plan_switch`` for a Duo sampler's widget values (boundary < 0: the official one)."""
    boundary = inputs["boundary"]
    return engine_sampling.plan_switch(variant, object() if has_low else None, steps, float(shift),
                                       None if boundary < 0 else float(boundary), int(inputs["switch_step"]),
                                       inputs["scheduler"])


def run_shift(api: dict, node_id: str, engine_sampling, variant: str) -> float:
    """The shift a Duo sampler runs with, by the documented rule (the test's own statement of it).

    A positive ``shift`` input wins; ``-1`` (auto, the MODEL sampler only) takes the nearest
    ``ModelSamplingSD3`` on the expert chains, else the variant's official shift.
    """
    shift = float(api[node_id]["inputs"]["shift"])
    if shift > 0:
        return shift
    high, low = sampler_models(api, node_id)
    carried = model_shifts(api, high)[:1] + (model_shifts(api, low)[:1] if low else [])
    return carried[0] if carried else float(engine_sampling.OFFICIAL[variant].shift)


def _shrunk_steps(engine_sampling, variant: str, has_low: bool, inputs: dict, shift: float) -> tuple[int, int]:
    """(steps, switch_step) for the short run, keeping an inside switch inside and explicit ones in place."""
    steps, switch = int(inputs["steps"]), int(inputs["switch_step"])
    short = min(steps, MIN_STEPS)
    if variant == "ti2v_5b":
        return short, switch if switch == -1 else short
    if switch >= 0:  # an explicit switch: same share of high-noise steps, still inside when it was
        if switch >= steps:
            return short, short
        if switch == 0:
            return short, 0
        return short, max(1, min(short - 1, round(switch * short / steps)))
    original = plan_for(engine_sampling, variant, has_low, inputs, steps, shift).switch_step
    if not 0 < original < steps:
        return short, -1
    for candidate in range(short, steps + 1):
        if 0 < plan_for(engine_sampling, variant, has_low, inputs, candidate, shift).switch_step < candidate:
            return candidate, -1
    return steps, -1


def shrink(api: dict, engine_sampling) -> dict:
    """The rewritten copy of ``api`` (module doc); ``engine_sampling`` is the pack's engine.sampling.loop."""
    api = copy.deepcopy(api)
    dropped = {node_id for node_id, node in api.items() if node["class_type"] in TEXT_ENCODER_LOADERS}
    windowed = any(node["class_type"] == CONTEXT_WINDOWS for node in api.values())
    for node_id, node in api.items():
        inputs = node["inputs"]
        if node["class_type"] in TEXT_ENCODERS:
            if not isinstance(inputs.get("text"), str):
                raise WorkflowPrepError(f"{_where(api, node_id)}: the prompt text must be a plain string to be "
                                        f"replaced by {CONDITIONING_NODE}")
            api[node_id] = {"class_type": CONDITIONING_NODE, "inputs": {"text": inputs["text"], "length": UMT5_LENGTH},
                            "_meta": {"title": f"{CONDITIONING_NODE} (was {node['class_type']})"}}
        elif node["class_type"] == CONTEXT_WINDOWS:
            inputs.update(context_length=WINDOW_LENGTH, context_overlap=WINDOW_OVERLAP)
        elif all(isinstance(inputs.get(k), int) for k in ("width", "height", "length")):
            inputs.update(width=WIDTH, height=HEIGHT, length=WINDOWED_LENGTH if windowed else LENGTH)
            if is_link(inputs.get("previous_latent")):  # an SVI continuation: room for new frames after its overlap
                inputs["length"] = clip_length(svi_overlap(inputs))
        elif isinstance(inputs.get("length"), int):  # a clip continuing another (extend nodes): same size
            inputs["length"] = clip_length(inputs.get("overlap"))
        elif is_duo_sampler(node) and is_link(inputs.get("lead_phases")):
            pass  # a phase plan (Lightning, 8 steps or so): its phases count on the bundled steps, so keep them
        elif is_duo_sampler(node):
            high, low = sampler_models(api, node_id)
            variant = model_variant(api, high)
            shift = run_shift(api, node_id, engine_sampling, variant)
            inputs["steps"], inputs["switch_step"] = _shrunk_steps(engine_sampling, variant, low is not None, inputs,
                                                                   shift)
    for node_id in dropped:
        del api[node_id]
    for node_id, node in api.items():
        for key, value in node["inputs"].items():
            if is_link(value) and value[0] not in api:
                raise WorkflowPrepError(f"{_where(api, node_id)}: input {key!r} comes from node {value[0]}, a text "
                                        "encoder loader the suite drops; only CLIPTextEncode can take its output")
    return api


def svi_overlap(inputs: dict) -> int:
    """Frames an SVI continuation node (Wan22DuoI2VExtendSVI) tells the join to drop: 1 + 4 x motion_latents."""
    return 1 + 4 * int(inputs["motion_latents"]) if is_link(inputs.get("previous_latent")) else 0


def clip_length(overlap) -> int:
    """LENGTH, or the shortest 4n+1 clip that still adds frames after ``overlap`` reused ones."""
    if not isinstance(overlap, int) or overlap < LENGTH:
        return LENGTH
    return overlap + 4 - (overlap - 1) % 4


def expected_frames(api: dict, node_id: str, seen: Optional[frozenset] = None) -> Optional[int]:
    """Frames of the clip node ``node_id`` outputs (a SaveVideo: of the video it saves), from the graph.

    A decoded clip has the ``length`` of the node that made its latent (found upstream through the
    sampler); ``Wan22DuoJoinClips`` gives ``first + second - overlap``, ``Wan22DuoVAEDecodeToDisk``
    ``previous_frames + samples - overlap``. None: no length upstream.
    """
    seen = (seen or frozenset()) | {node_id}
    node = api[node_id]
    inputs = node["inputs"]
    if node["class_type"] == "Wan22DuoJoinClips":
        first, second = expected_frames(api, inputs["first"][0], seen), expected_frames(api, inputs["second"][0], seen)
        overlap = inputs["overlap"]
        if is_link(overlap):  # the extend node's overlap output: its overlap input, or the SVI node's 1 + 4k
            source = api[overlap[0]]["inputs"]
            overlap = source["overlap"] if "overlap" in source else svi_overlap(source)
        return None if first is None or second is None else first + second - int(overlap)
    if node["class_type"] == "Wan22DuoVAEDecodeToDisk":  # the video so far + this clip without its overlap
        clip = expected_frames(api, inputs["samples"][0], seen)
        previous = inputs.get("previous_frames")
        before = expected_frames(api, previous[0], seen) if is_link(previous) else 0
        overlap = inputs.get("overlap", 0)
        if is_link(overlap):
            source = api[overlap[0]]["inputs"]
            overlap = source["overlap"] if "overlap" in source else svi_overlap(source)
        return None if clip is None or before is None else before + clip - int(overlap)
    if node["class_type"] != CONDITIONING_NODE and isinstance(inputs.get("length"), int):
        return inputs["length"]
    preferred = ("video", "images", "samples", "latent", "latent_image")
    links = [inputs[k] for k in preferred if is_link(inputs.get(k))] + \
            [v for k, v in inputs.items() if k not in preferred and is_link(v)]
    for link in links:
        if link[0] in api and link[0] not in seen:
            frames = expected_frames(api, link[0], seen)
            if frames is not None:
                return frames
    return None


@dataclass(frozen=True)
class SwitchExpectation:
    node_id: str
    variant: str
    has_low: bool  # a low-noise expert is connected
    plan: object  # engine.sampling.loop.SwitchPlan for the settings queued
    shift: float  # the shift it runs with (run_shift)


def expected_switches(api: dict, engine_sampling) -> list[SwitchExpectation]:
    """For each Duo sampler of a (shrunk) workflow: the plan engine.sampling.loop makes for its settings."""
    out = []
    for node_id, node in api.items():
        if is_duo_sampler(node):
            high, low = sampler_models(api, node_id)
            variant = model_variant(api, high)
            inputs = node["inputs"]
            shift = run_shift(api, node_id, engine_sampling, variant)
            plan = plan_for(engine_sampling, variant, low is not None, inputs, int(inputs["steps"]), shift)
            out.append(SwitchExpectation(node_id, variant, low is not None, plan, shift))
    return out


def lead_steps(api: dict, link) -> list[int]:
    """The step counts of the leading phases behind a sampler's ``lead_phases`` link, first phase first."""
    counts, node_id, seen = [], link[0], set()
    while node_id in api and node_id not in seen:
        seen.add(node_id)
        inputs = api[node_id]["inputs"]
        counts.append(int(inputs["steps"]))
        previous = inputs.get("lead_phases")
        if not is_link(previous):
            break
        node_id = previous[0]
    return counts[::-1]


def model_shifts(api: dict, link) -> list[float]:
    """Every ``ModelSamplingSD3`` shift on the model chain behind ``link`` (nearest first)."""
    shifts, node_id, seen = [], link[0], set()
    while node_id in api and node_id not in seen:
        seen.add(node_id)
        node = api[node_id]
        if node["class_type"] == "ModelSamplingSD3":
            shifts.append(float(node["inputs"]["shift"]))
        model = node["inputs"].get("model")
        if not is_link(model):
            break
        node_id = model[0]
    return shifts
