"""Generate the bundled workflows from one description, so the UI and API copies cannot drift.

Writes, for every workflow described in ``WORKFLOWS`` below:

* ``example_workflows/NN <card title>.json``: the UI (save) format. ComfyUI serves this folder as the
  pack's templates (Workflow -> Browse Templates), and the frontend's Missing Models dialog
  reads ``properties.models`` on the loader nodes. The file name is the template card's title and
  sets the cards' order (``template_cards.py``: the frontends show nothing else), e.g.
  ``01 Wan 2.2 T2V-A14B text to video.json`` for ``t2v_a14b``; files no workflow writes are removed.
* ``workflows/api/<name>.json``: the API format that ``POST /prompt`` accepts as it is.
* ``example_workflows/NN <card title>.jpg``: the card's picture (``workflow_thumbnails.py``).

Positions come from ``workflow_layout.py``: each node is described by its column (``x``) and its
order in the column (``y``), and placed from the sizes ComfyUI's frontend renders.

UI ``widgets_values`` are positional. Their order comes from the live schemas (our nodes'
``INPUT_TYPES``; ComfyUI core nodes from ``workflows/schema/comfyui-0.3.76-core-nodes.json``, a
subset of ComfyUI 0.3.76's ``/object_info``), never from a hand-written list.

Usage::

    python scripts/build_workflows.py            # write the files
    python scripts/build_workflows.py --check    # exit 1 if a committed file differs
    python scripts/build_workflows.py --core-reference object_info.json   # refresh the core subset

Never put a .json file directly in ``workflows/``: ComfyUI would list it as a template too
(it globs ``<pack>/workflows/*.json`` as well as ``example_workflows/*.json``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from template_cards import card, file_stem  # noqa: E402
# The example first and last frames the pack draws into ComfyUI's input folder (nodes/example_images.py).
FIRST_FRAME, LAST_FRAME = "wan22duo_first_frame.png", "wan22duo_last_frame.png"
from workflow_layout import arrange, first_view, group_box, layout_problems, load_sizes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
UI_DIR = ROOT / "example_workflows"
API_DIR = ROOT / "workflows" / "api"
CORE_SCHEMA = ROOT / "workflows" / "schema" / "comfyui-0.3.76-core-nodes.json"
# Every node id of ComfyUI 0.3.76 with a digest of its schema, so the tests can check the subset above and
# that our ids collide with none, without the full /object_info dump.
NODE_DIGESTS = ROOT / "workflows" / "schema" / "comfyui-0.3.76-node-digests.json"
CORE_NODES = ("CLIPLoader", "CLIPTextEncode", "LoadImage", "CreateVideo", "SaveVideo",
              "UNETLoader", "VAELoader", "VAEDecode", "EmptyHunyuanLatentVideo", "WanImageToVideo",
              "Wan22ImageToVideoLatent")
# city96's ComfyUI-GGUF (the revision in shared/comfyui/README.md), in /object_info form; the
# integration suite checks it against the live node.
GGUF_SCHEMA = ROOT / "workflows" / "schema" / "comfyui-gguf-nodes.json"
GGUF_CNR = ("ComfyUI-GGUF", "795e45156ece99afbc3efef911e63fcb46e6a20d")
COMFY_VERSION = "0.3.76"
PACK_VERSION = "0.1.0"
# Frontend-only node types: saved in UI files, never sent to the server.
UI_ONLY = ("MarkdownNote", "Note")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
SEED_NAMES = ("seed", "noise_seed")

# ---------------------------------------------------------------- facts (spec §1.2, Comfy-Org repackaged files)

# Official default negative prompt, verbatim (wan_shared_cfg.sample_neg_prompt, spec §1.2).
NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

HF_WAN22 = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
# The official Comfy-Org Wan 2.2 templates take the text encoder from the Wan 2.1 repack.
HF_WAN21 = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"


def model_file(name: str, directory: str, base: str = HF_WAN22) -> dict:
    """A ``properties.models`` entry as the official templates write it."""
    return {"name": name, "url": f"{base}/{directory}/{name}", "directory": directory}


UMT5 = model_file("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders", HF_WAN21)
VAE21 = model_file("wan_2.1_vae.safetensors", "vae")
VAE22 = model_file("wan2.2_vae.safetensors", "vae")
T2V_HIGH = model_file("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "diffusion_models")
T2V_LOW = model_file("wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "diffusion_models")
I2V_HIGH = model_file("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "diffusion_models")
I2V_LOW = model_file("wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors", "diffusion_models")
TI2V_5B = model_file("wan2.2_ti2v_5B_fp16.safetensors", "diffusion_models")
LIGHTNING_HIGH = model_file("wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors", "loras")
LIGHTNING_LOW = model_file("wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors", "loras")

# ---------------------------------------------------------------- schemas


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str  # "COMBO" for a list of choices
    options: dict
    choices: Optional[list]
    optional: bool

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    def ui_extras(self) -> list:
        """Frontend-only widget values the editor saves after this widget's own value."""
        if self.type == "INT":
            # The frontend adds a control widget when asked to, and by legacy convention for seeds.
            control = self.options.get("control_after_generate", self.name in SEED_NAMES)
            return ["fixed"] if control else []
        if self.type == "COMBO" and self.options.get("image_upload"):
            return ["image"]  # the upload button is a widget too
        return []


@dataclass(frozen=True)
class NodeSchema:
    class_type: str
    display_name: str
    inputs: tuple  # InputSpec, required first, in definition order
    outputs: tuple  # (name, type)
    core: bool
    cnr: Optional[tuple] = None  # (cnr_id, ver) of a third-party pack (ComfyUI-GGUF)

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.class_type} has no input {name!r}; it has {[s.name for s in self.inputs]}")

    def output_index(self, name: str) -> int:
        names = [n for n, _ in self.outputs]
        if name not in names:
            raise KeyError(f"{self.class_type} has no output {name!r}; it has {names}")
        return names.index(name)


def _input_spec(name: str, raw: Any, optional: bool) -> InputSpec:
    kind = raw[0]
    options = dict(raw[1]) if len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(kind, (list, tuple)):
        return InputSpec(name, "COMBO", options, list(kind), optional)
    if kind == "COMBO":
        return InputSpec(name, "COMBO", options, list(options.get("options", [])), optional)
    return InputSpec(name, str(kind), options, None, optional)


def core_schema(info: dict, cnr: Optional[tuple] = None) -> NodeSchema:
    """Schema of a core node from its ``/object_info`` entry (``input_order`` gives the widget order)."""
    specs = []
    for section in ("required", "optional"):
        raw = info["input"].get(section, {})
        for name in info.get("input_order", {}).get(section, list(raw)):
            specs.append(_input_spec(name, raw[name], section == "optional"))
    names = info.get("output_name") or info["output"]
    outputs = tuple(zip(names, info["output"]))
    return NodeSchema(info["name"], info.get("display_name") or info["name"], tuple(specs), outputs, True, cnr)


def pack_schema(class_type: str, cls: type, display_name: Optional[str]) -> NodeSchema:
    """Schema of one of our nodes from its ``INPUT_TYPES`` (dict order is the widget order)."""
    types = cls.INPUT_TYPES()
    specs = [
        _input_spec(name, raw, section == "optional")
        for section in ("required", "optional")
        for name, raw in types.get(section, {}).items()
    ]
    returns = tuple(cls.RETURN_TYPES)
    names = tuple(getattr(cls, "RETURN_NAMES", None) or returns)
    return NodeSchema(class_type, display_name or class_type, tuple(specs), tuple(zip(names, returns)), False)


def load_schemas(pack_mappings: Optional[dict] = None, display_names: Optional[dict] = None) -> dict:
    """Every schema the workflows may use: core nodes from the committed subset, ours live."""
    if pack_mappings is None:
        sys.path.insert(0, str(ROOT / "scripts"))
        from packpath import load_pack

        pack = load_pack()
        pack_mappings, display_names = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
    core = json.loads(CORE_SCHEMA.read_text(encoding="utf-8"))
    schemas = {name: core_schema(info) for name, info in core.items()}
    gguf = json.loads(GGUF_SCHEMA.read_text(encoding="utf-8"))
    schemas.update({name: core_schema(info, GGUF_CNR) for name, info in gguf.items()})
    for name, cls in pack_mappings.items():
        schemas[name] = pack_schema(name, cls, (display_names or {}).get(name))
    return schemas


# ---------------------------------------------------------------- the description


@dataclass
class Node:
    id: int
    type: str
    pos: tuple
    size: tuple
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)  # input name -> (source node id, source output name)
    title: Optional[str] = None
    models: list = field(default_factory=list)
    color: Optional[tuple] = None  # (color, bgcolor)


@dataclass
class Workflow:
    name: str
    uid: str = ""
    nodes: list = field(default_factory=list)
    groups: list = field(default_factory=list)  # (title, [node ids])
    title: str = ""  # what it does, for its thumbnail ("T2V-A14B text-to-video")

    def add(self, node: Node) -> Node:
        if any(n.id == node.id for n in self.nodes):
            raise ValueError(f"{self.name}: node id {node.id} used twice")
        self.nodes.append(node)
        return node

    def note(self, node_id: int, title: str, text: str, pos: tuple, size: tuple) -> None:
        self.add(Node(node_id, "MarkdownNote", pos, size, {"text": text}, title=title, color=("#432", "#653")))

    def node(self, node_id: int) -> Node:
        return next(n for n in self.nodes if n.id == node_id)


GREEN = ("#232", "#353")
RED = ("#322", "#533")


def _switch_split(steps: int, shift: float, boundary: float, scheduler: str) -> int:
    """High-noise step count under the official rule, from the engine's own schedule."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from packpath import load_pack

    load_pack()
    from wan22duo.engine.sampling.schedule import boundary_switch_step, make_schedule

    return boundary_switch_step(make_schedule(scheduler, steps, shift).timesteps, boundary)


def _tree(entries: list) -> str:
    """The ``ComfyUI/models`` folder tree for a model note."""
    folders: dict = {}
    for entry in entries:
        folders.setdefault(entry["directory"], []).append(entry["name"])
    lines = ["ComfyUI/", "└── models/"]
    items = sorted(folders.items())
    for i, (folder, names) in enumerate(items):
        last = i == len(items) - 1
        lines.append(f"    {'└──' if last else '├──'} {folder}/")
        for j, name in enumerate(names):
            lead = "    " if last else "│   "
            lines.append(f"    {lead}{'└──' if j == len(names) - 1 else '├──'} {name}")
    return "\n".join(lines)


def model_note(title: str, entries: list, vae_line: str) -> str:
    links = "\n".join(f"- [{e['name']}]({e['url']}) → `models/{e['directory']}/`" for e in entries)
    return (
        f"## {title}: model files\n\n{links}\n\n```\n{_tree(entries)}\n```\n\n{vae_line}\n\n"
        "Missing files? The Missing Models dialog offers these downloads (each loader node lists "
        "its file). Restart or press R to refresh the file lists after copying them in."
    )


VAE_A14B = (
    "**VAE:** the A14B models use the **Wan 2.1 VAE** (`wan_2.1_vae.safetensors`, 16 latent channels). "
    "`wan2.2_vae.safetensors` belongs to TI2V-5B only; a mismatch stops with a message naming the right file."
)
VAE_5B = (
    "**VAE:** TI2V-5B uses the **Wan 2.2 VAE** (`wan2.2_vae.safetensors`, 48 latent channels). "
    "`wan_2.1_vae.safetensors` belongs to the A14B models only; a mismatch stops with a message naming the right file."
)


def _common_text(w: Workflow, prompt: str, clip_link: int = 20) -> None:
    w.add(Node(clip_link, "CLIPLoader", (40, 330), (340, 110),
               {"clip_name": UMT5["name"], "type": "wan", "device": "default"}, models=[UMT5]))
    w.add(Node(21, "CLIPTextEncode", (420, 60), (440, 200), {"text": prompt}, {"clip": (clip_link, "CLIP")},
               title="Positive prompt", color=GREEN))
    w.add(Node(22, "CLIPTextEncode", (420, 300), (440, 200), {"text": NEGATIVE_PROMPT},
               {"clip": (clip_link, "CLIP")}, title="Negative prompt (official default)", color=RED))


def _output(w: Workflow, latent_from: int, fps: float, prefix: str) -> None:
    decode = {"tile_size": 0, "tile_overlap": 64, "auto_tile": False}
    w.add(Node(60, "Wan22DuoVAEDecode", (1340, 60), (300, 110), decode,
               {"vae": (30, "vae"), "samples": (latent_from, "latent")}))
    w.add(Node(61, "CreateVideo", (1340, 220), (300, 80), {"fps": fps}, {"images": (60, "images")}))
    w.add(Node(62, "SaveVideo", (1340, 380), (400, 420),
               {"filename_prefix": f"video/{prefix}", "format": "auto", "codec": "auto"},
               {"video": (61, "VIDEO")}))
    w.groups.append(("Decode and save", [60, 61, 62]))


def _expert(node_id: int, entry: dict, role: str, pos: tuple) -> Node:
    widgets = {"unet_name": entry["name"], "role": role, "weight_dtype": "default",
               "compute_dtype": "auto", "device": "auto", "attention": "auto", "compile": "off"}
    title = "High-noise expert" if role == "high_noise" else "Low-noise expert"
    return Node(node_id, "Wan22DuoExpertLoader", pos, (340, 180), widgets, title=title, models=[entry])


def _sampler(w: Workflow, latent: tuple, cond: tuple, settings: dict, low: bool = True) -> Node:
    links = {"high_noise_model": settings.pop("high_from"), "positive": cond[0], "negative": cond[1],
             "latent": latent}
    if low:
        links["low_noise_model"] = settings.pop("low_from")
    widgets = {"seed": 42, "steps": 40, "cfg_high": 4.0, "cfg_low": 3.0, "shift": 12.0, "boundary": -1.0,
               "switch_step": -1, "sampler": "unipc", "scheduler": "wan", "memory": "offload_cpu",
               "gpu_budget": "auto"}
    widgets.update(settings)
    return w.add(Node(50, "Wan22DuoSampler", (900, 60), (360, 620), widgets, links))


def _a14b(name: str, title: str, high: dict, low: dict, prompt: str, sampler: dict, i2v: bool,
          size: tuple = (1280, 720), lightning: bool = False) -> Workflow:
    w = Workflow(name, title=title)
    w.add(_expert(10, high, "high_noise", (40, 60)))
    w.add(_expert(11, low, "low_noise", (40, 260)))
    high_from, low_from = (10, "model"), (11, "model")
    models = [high, low]
    if lightning:
        for node_id, source, lora, pos in ((12, 10, LIGHTNING_HIGH, (420, -300)), (13, 11, LIGHTNING_LOW, (420, -160))):
            which = "high" if source == 10 else "low"
            w.add(Node(node_id, "Wan22DuoLoraLoader", pos, (340, 110), {"lora_name": lora["name"], "strength": 1.0},
                       {"model": (source, "model")}, title=f"Lightning LoRA ({which}-noise)", models=[lora]))
        high_from, low_from = (12, "model"), (13, "model")
        models += [LIGHTNING_HIGH, LIGHTNING_LOW]
    _common_text(w, prompt)
    w.node(20).pos = (40, 460)
    w.add(Node(30, "Wan22DuoVAELoader", (40, 610), (340, 110),
               {"vae_name": VAE21["name"], "dtype": "fp32", "device": "auto"}, models=[VAE21]))
    width, height = size
    if i2v:
        w.add(Node(31, "LoadImage", (420, 840), (340, 360), {"image": FIRST_FRAME}, title="Start image"))
        w.add(Node(40, "Wan22DuoI2VConditioning", (420, 560), (440, 240),
                   {"width": width, "height": height, "length": 81, "batch_size": 1},
                   {"positive": (21, "CONDITIONING"), "negative": (22, "CONDITIONING"), "vae": (30, "vae"),
                    "start_image": (31, "IMAGE")}))
        cond, latent = ((40, "positive"), (40, "negative")), (40, "latent")
    else:
        w.add(Node(40, "Wan22DuoEmptyLatent", (420, 560), (440, 160),
                   {"width": width, "height": height, "length": 81, "batch_size": 1}, title="Video size"))
        cond, latent = ((21, "CONDITIONING"), (22, "CONDITIONING")), (40, "latent")
    s = _sampler(w, latent, cond, dict(sampler, high_from=high_from, low_from=low_from))
    _output(w, 50, 16.0, f"wan22duo_{name}")
    boundary = 0.900 if i2v else 0.875
    k = _switch_split(s.widgets["steps"], s.widgets["shift"], boundary, s.widgets["scheduler"])
    w.note(1, "Model files", model_note(title, models + [VAE21, UMT5], VAE_A14B), (-520, 60), (500, 560))
    w.note(2, "How this workflow samples", _a14b_note(title, s.widgets, boundary, k, i2v, lightning),
           (-520, 660), (500, 460))
    w.groups[:0] = [("Models", [10, 11, 20, 30]), ("Prompt and size", [21, 22, 40, 31] if i2v else [21, 22, 40]),
                    ("Sample", [50])]
    if lightning:
        w.groups.insert(1, ("Lightning LoRAs", [12, 13]))
    return w


def _a14b_note(title: str, s: dict, boundary: float, k: int, i2v: bool, lightning: bool) -> str:
    steps = s["steps"]
    lines = [
        f"## {title}",
        "",
        f"**Wan 2.2 Duo Sampler** runs both experts in one continuous trajectory: the high-noise expert "
        f"while the model timestep is at least boundary × 1000, then the low-noise expert (the official "
        f"Wan 2.2 rule). `boundary = -1` means the model's official boundary ({boundary:.3f} for "
        f"{'I2V' if i2v else 'T2V'}-A14B). With {steps} steps at shift {s['shift']:g} ({s['scheduler']} "
        f"schedule) that is **{k} high-noise + {steps - k} low-noise steps**; the node shows the split "
        f"after each run. Set `switch_step` (0..steps) to force a step index instead.",
        "",
    ]
    if lightning:
        lines += [
            "**Lightning (4-step) settings**, as in Comfy-Org's 4-step Wan 2.2 templates: the lightx2v "
            "LoRAs at strength 1.0, one on each expert (high-noise file on the high-noise expert, "
            "low-noise file on the low-noise one), 4 steps, cfg 1 on both experts (so the negative "
            "prompt has no effect), shift 5, euler + simple. The simple schedule at "
            "shift 5 gives timesteps 1000, 937.5, 833.3, 625 (the ones the LoRA was distilled on), and "
            "the official rule splits them 2 + 2.",
            "",
        ]
    else:
        lines += [
            f"Defaults are the official Wan 2.2 ones: {steps} steps, shift {s['shift']:g}, cfg "
            f"{s['cfg_high']:g} (high) / {s['cfg_low']:g} (low), UniPC on the official `wan` schedule, "
            f"1280×720, 81 frames, 16 fps, the official negative prompt.",
            "",
        ]
    lines += [
        "**Memory:** `offload_cpu` (default) parks the idle expert in CPU RAM, so only one 14B expert "
        "sits on the GPU; `release` drops the idle expert's weights altogether and reloads them from the "
        "file when needed (least memory, slower); `keep_both` leaves both on the GPU (fastest, needs room "
        "for both). Each expert loader can also put its expert on its own `device`.",
    ]
    if i2v:
        lines += ["", "The start image is center-cropped to the video's aspect ratio, then resized (bicubic). "
                  "Sizes must be multiples of 16; frames 4n+1."]
    else:
        lines += ["", "Sizes must be multiples of 16; frames 4n+1 (81 = 5 s at 16 fps)."]
    return "\n".join(lines)


def _ti2v(name: str, i2v: bool, prompt: str) -> Workflow:
    w = Workflow(name)
    w.add(Node(10, "Wan22DuoTI2VLoader", (40, 60), (340, 150),
               {"unet_name": TI2V_5B["name"], "weight_dtype": "default", "compute_dtype": "auto", "device": "auto",
                "attention": "auto", "compile": "off"},
               title="TI2V-5B model", models=[TI2V_5B]))
    _common_text(w, prompt)
    w.node(20).pos = (40, 260)
    w.add(Node(30, "Wan22DuoVAELoader", (40, 410), (340, 110),
               {"vae_name": VAE22["name"], "dtype": "fp32", "device": "auto"}, models=[VAE22]))
    links = {"vae": (30, "vae")}
    if i2v:
        w.add(Node(31, "LoadImage", (420, 780), (340, 360), {"image": FIRST_FRAME}, title="Start image"))
        links["start_image"] = (31, "IMAGE")
    w.add(Node(40, "Wan22DuoTI2VLatent", (420, 560), (440, 180),
               {"width": 1280, "height": 704, "length": 121, "batch_size": 1}, links, title="Video size"))
    # TI2V-5B is one model: it goes in the high_noise_model slot; cfg_low and boundary are unused.
    _sampler(w, (40, "latent"), ((21, "CONDITIONING"), (22, "CONDITIONING")),
             {"high_from": (10, "model"), "steps": 50, "cfg_high": 5.0, "cfg_low": 5.0, "shift": 5.0}, low=False)
    _output(w, 50, 24.0, f"wan22duo_{name}")
    title = "TI2V-5B image-to-video" if i2v else "TI2V-5B text-to-video"
    w.title = title
    w.note(1, "Model files", model_note(title, [TI2V_5B, VAE22, UMT5], VAE_5B), (-520, 60), (500, 460))
    w.note(2, "How this workflow samples", _ti2v_note(title, i2v), (-520, 560), (500, 360))
    w.groups[:0] = [("Models", [10, 20, 30]), ("Prompt and size", [21, 22, 40, 31] if i2v else [21, 22, 40]),
                    ("Sample", [50])]
    return w


def _ti2v_note(title: str, i2v: bool) -> str:
    text = (
        f"## {title}\n\nTI2V-5B is a single model: it goes in the sampler's `high_noise_model` input and "
        "`low_noise_model` stays empty (`cfg_low`, `boundary` and `switch_step` are not used).\n\n"
        "Defaults are the official ones: 50 steps, shift 5, cfg 5, UniPC on the `wan` schedule, "
        "1280×704 (or 704×1280), 121 frames, 24 fps, the official negative prompt. Sizes must be "
        "multiples of 32; frames 4n+1."
    )
    if i2v:
        text += ("\n\nThe start image is scaled to cover the video size and center-cropped, then becomes "
                 "latent frame 0, which stays fixed while the rest is generated (as the official code and "
                 "ComfyUI's Wan22ImageToVideoLatent do). Disconnect it for text-to-video.")
    return text


T2V_PROMPT = (
    "A red fox trots through fresh snow in a birch forest at sunrise. The camera tracks low beside it; "
    "warm light slants between the trunks, its breath steams in the cold air and snow dust drifts from "
    "its paws. Cinematic, shallow depth of field, natural colors."
)
I2V_PROMPT = (
    "The scene comes to life with gentle, natural motion: the camera slowly pushes in, light shifts "
    "softly across the frame and small details move in a light breeze. Realistic, smooth, steady shot."
)


def describe() -> list:
    """All bundled workflows."""
    official_t2v = {"steps": 40, "cfg_high": 4.0, "cfg_low": 3.0, "shift": 12.0}
    official_i2v = {"steps": 40, "cfg_high": 3.5, "cfg_low": 3.5, "shift": 5.0}
    lightning = {"steps": 4, "cfg_high": 1.0, "cfg_low": 1.0, "shift": 5.0, "sampler": "euler",
                 "scheduler": "simple"}
    return [
        _a14b("t2v_a14b", "T2V-A14B text-to-video", T2V_HIGH, T2V_LOW, T2V_PROMPT, official_t2v, False),
        _a14b("i2v_a14b", "I2V-A14B image-to-video", I2V_HIGH, I2V_LOW, I2V_PROMPT, official_i2v, True),
        _ti2v("ti2v_5b_t2v", False, T2V_PROMPT),
        _ti2v("ti2v_5b_i2v", True, I2V_PROMPT),
        _a14b("t2v_a14b_lightning", "T2V-A14B Lightning (4 steps)", T2V_HIGH, T2V_LOW, T2V_PROMPT, lightning,
              False, size=(832, 480), lightning=True),
    ]

# ---------------------------------------------------------------- native ComfyUI loaders + Wan22DuoModelSampler
# (issue 10) The graphs most users already have: UNETLoader / UnetLoaderGGUF and ComfyUI's VAE and
# image-to-video nodes, with our sampler on ComfyUI MODEL inputs.

HF_T2V_GGUF = "https://huggingface.co/QuantStack/Wan2.2-T2V-A14B-GGUF/resolve/main"
T2V_HIGH_GGUF = {"name": "Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf", "directory": "unet",
                 "url": f"{HF_T2V_GGUF}/HighNoise/Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf"}
T2V_LOW_GGUF = {"name": "Wan2.2-T2V-A14B-LowNoise-Q4_K_M.gguf", "directory": "unet",
                "url": f"{HF_T2V_GGUF}/LowNoise/Wan2.2-T2V-A14B-LowNoise-Q4_K_M.gguf"}


def _native_loader(node_id: int, entry: dict, title: str, pos: tuple) -> Node:
    if entry["name"].endswith(".gguf"):
        # No properties.models: ComfyUI 0.3.76's Missing Models dialog checks entries against its own
        # model lists, which never hold .gguf files, and refuses the "unet" folder for downloads, so it
        # would mark both experts "Invalid directory specified" even when they are installed. The
        # download links stay in the model note.
        return Node(node_id, "UnetLoaderGGUF", pos, (340, 90), {"unet_name": entry["name"]}, title=title)
    return Node(node_id, "UNETLoader", pos, (340, 110), {"unet_name": entry["name"], "weight_dtype": "default"},
                title=title, models=[entry])


def _native_output(w: Workflow, fps: float, prefix: str) -> None:
    w.add(Node(60, "VAEDecode", (1340, 60), (300, 60), {}, {"samples": (50, "latent"), "vae": (30, "VAE")}))
    w.add(Node(61, "CreateVideo", (1340, 180), (300, 80), {"fps": fps}, {"images": (60, "IMAGE")}))
    w.add(Node(62, "SaveVideo", (1340, 380), (400, 420),
               {"filename_prefix": f"video/{prefix}", "format": "auto", "codec": "auto"},
               {"video": (61, "VIDEO")}))
    w.groups.append(("Decode and save", [60, 61, 62]))


def _model_sampler(w: Workflow, latent: tuple, cond: tuple, widgets: dict, low: bool) -> Node:
    links = {"high_noise_model": (10, "MODEL"), "positive": cond[0], "negative": cond[1], "latent": latent}
    if low:
        links["low_noise_model"] = (11, "MODEL")
    values = {"seed": 42, "steps": 40, "cfg_high": 4.0, "cfg_low": 3.0, "shift": 12.0, "boundary": -1.0,
              "switch_step": -1, "sampler": "unipc", "scheduler": "wan", "memory": "offload_cpu"}
    values.update(widgets)
    # 390 wide: frontend 1.49 (ComfyUI 0.33) cuts a title wider than the node less 60 px, and the title
    # "Wan 2.2 Duo Sampler (ComfyUI MODEL inputs)" is 314 px in its 14 px Inter (cut at 360).
    return w.add(Node(50, "Wan22DuoModelSampler", (900, 60), (390, 620), values, links))


def _native_note(title: str, s: dict, boundary: Optional[float], k: int, gguf: bool) -> str:
    steps = s["steps"]
    split = (f"**{k} high-noise + {steps - k} low-noise steps** (boundary {boundary:.3f}, the official one)"
             if boundary is not None else "every step on the one model (TI2V-5B has no switch)")
    lines = [
        f"## {title}",
        "",
        "ComfyUI's own loaders feed **Wan 2.2 Duo Sampler (ComfyUI MODEL inputs)**: any LoRA or patch node "
        "(LoraLoaderModelOnly, attention or caching patches, ModelSamplingSD3) can sit between a loader and "
        "the sampler and applies exactly as in a KSampler, while the sampler runs the official switch on one "
        f"continuous trajectory. With {steps} steps at shift {s['shift']:g} ({s['scheduler']} schedule) that is "
        f"{split}; the node shows the split after each run.",
        "",
        "**Shift:** the sampler's `shift` is used. Set it to -1 to take the shift of a ModelSamplingSD3 on the "
        "models instead (or, with none, the official value); the switch report names the shift used.",
        "",
        "**Memory:** ComfyUI's model manager loads the running expert (partially, if the GPU is small); with "
        "`offload_cpu` the idle expert is unloaded to RAM before the other one runs.",
    ]
    if gguf:
        lines += ["", "**GGUF:** city96's ComfyUI-GGUF provides UnetLoaderGGUF (install it from the Manager). "
                  "Q4_K_M fits 12-16 GB GPUs; any other quantization of the same repositories (Q3_K_M .. Q8_0) "
                  "drops in by file name."]
    return "\n".join(lines)


def _native_text(w: Workflow, prompt: str) -> None:
    _common_text(w, prompt)
    w.node(20).pos = (40, 460)


def _native_a14b(name: str, title: str, high: dict, low: dict, prompt: str, widgets: dict, i2v: bool) -> Workflow:
    w = Workflow(name, title=title)
    w.add(_native_loader(10, high, "High-noise expert", (40, 60)))
    w.add(_native_loader(11, low, "Low-noise expert", (40, 260)))
    _native_text(w, prompt)
    w.add(Node(30, "VAELoader", (40, 610), (340, 80), {"vae_name": VAE21["name"]}, models=[VAE21]))
    if i2v:
        w.add(Node(31, "LoadImage", (420, 840), (340, 360), {"image": FIRST_FRAME}, title="Start image"))
        w.add(Node(40, "WanImageToVideo", (420, 560), (440, 240),
                   {"width": 1280, "height": 720, "length": 81, "batch_size": 1},
                   {"positive": (21, "CONDITIONING"), "negative": (22, "CONDITIONING"), "vae": (30, "VAE"),
                    "start_image": (31, "IMAGE")}))
        cond, latent = ((40, "positive"), (40, "negative")), (40, "latent")
    else:
        w.add(Node(40, "EmptyHunyuanLatentVideo", (420, 560), (440, 160),
                   {"width": 1280, "height": 720, "length": 81, "batch_size": 1}, title="Video size"))
        cond, latent = ((21, "CONDITIONING"), (22, "CONDITIONING")), (40, "LATENT")
    s = _model_sampler(w, latent, cond, widgets, low=True)
    _native_output(w, 16.0, f"wan22duo_{name}")
    boundary = 0.900 if i2v else 0.875
    k = _switch_split(s.widgets["steps"], s.widgets["shift"], boundary, s.widgets["scheduler"])
    files_note = model_note(title, [high, low, VAE21, UMT5], VAE_A14B)
    if high["name"].endswith(".gguf"):
        files_note += ("\n\nThe two GGUF experts are not in that dialog (ComfyUI's model lists never hold `.gguf` "
                       "files, so it could not tell them present): download them from the links above into "
                       "`models/unet/`.")
    w.note(1, "Model files", files_note, (-520, 60), (500, 560))
    w.note(2, "How this workflow samples", _native_note(title, s.widgets, boundary, k, high["directory"] == "unet"),
           (-520, 660), (500, 460))
    w.groups[:0] = [("Models", [10, 11, 20, 30]), ("Prompt and size", [21, 22, 40, 31] if i2v else [21, 22, 40]),
                    ("Sample", [50])]
    return w


def _native_ti2v(name: str, prompt: str) -> Workflow:
    w = Workflow(name)
    w.add(_native_loader(10, TI2V_5B, "TI2V-5B model", (40, 60)))
    _native_text(w, prompt)
    w.node(20).pos = (40, 260)
    w.add(Node(30, "VAELoader", (40, 410), (340, 80), {"vae_name": VAE22["name"]}, models=[VAE22]))
    w.add(Node(40, "Wan22ImageToVideoLatent", (420, 560), (440, 180),
               {"width": 1280, "height": 704, "length": 121, "batch_size": 1}, {"vae": (30, "VAE")},
               title="Video size (connect start_image for image-to-video)"))
    s = _model_sampler(w, (40, "LATENT"), ((21, "CONDITIONING"), (22, "CONDITIONING")),
                       {"steps": 50, "cfg_high": 5.0, "cfg_low": 5.0, "shift": 5.0}, low=False)
    _native_output(w, 24.0, f"wan22duo_{name}")
    title = "TI2V-5B text-to-video (ComfyUI loaders)"
    w.title = title
    w.note(1, "Model files", model_note(title, [TI2V_5B, VAE22, UMT5], VAE_5B), (-520, 60), (500, 460))
    w.note(2, "How this workflow samples", _native_note(title, s.widgets, None, 50, False), (-520, 560), (500, 420))
    w.groups[:0] = [("Models", [10, 20, 30]), ("Prompt and size", [21, 22, 40]), ("Sample", [50])]
    return w


def describe_native() -> list:
    """The ComfyUI-loader workflows (Wan22DuoModelSampler), official settings."""
    official_t2v = {"steps": 40, "cfg_high": 4.0, "cfg_low": 3.0, "shift": 12.0}
    official_i2v = {"steps": 40, "cfg_high": 3.5, "cfg_low": 3.5, "shift": 5.0}
    return [
        _native_a14b("t2v_a14b_native", "T2V-A14B text-to-video (ComfyUI loaders)", T2V_HIGH, T2V_LOW, T2V_PROMPT,
                     official_t2v, False),
        _native_a14b("i2v_a14b_native", "I2V-A14B image-to-video (ComfyUI loaders)", I2V_HIGH, I2V_LOW, I2V_PROMPT,
                     official_i2v, True),
        _native_ti2v("ti2v_5b_native", T2V_PROMPT),
        _native_a14b("t2v_a14b_gguf", "T2V-A14B text-to-video (GGUF Q4_K_M)", T2V_HIGH_GGUF, T2V_LOW_GGUF,
                     T2V_PROMPT, official_t2v, False),
    ]


# ---------------------------------------------------------------- keyframe and continuation workflows (issue 14)
# Built on the plain I2V / TI2V workflows above, with the conditioning node swapped and nodes added.

FIRST_LAST_PROMPT = (
    "The scene moves smoothly and naturally from the first image to the last: the camera glides, the "
    "subjects change pose in one continuous motion. Realistic, steady shot, consistent lighting."
)
EXTEND_OVERLAP = 5  # 1 + 4: fills latent frames 0 and 1 of the new clip exactly


def _replace_note(w: Workflow, node_id: int, text: str) -> None:
    note = w.node(node_id)
    note.widgets = {"text": text}


def _end_image(w: Workflow, pos: tuple) -> None:
    w.node(31).title = "Start image (first frame)"
    w.add(Node(32, "LoadImage", pos, (340, 360), {"image": LAST_FRAME}, title="End image (last frame)"))
    for title, ids in w.groups:
        if title == "Prompt and size":
            ids.append(32)


def _i2v_first_last(official: dict) -> Workflow:
    w = _a14b("i2v_a14b_first_last", "I2V-A14B first-last frame", I2V_HIGH, I2V_LOW, FIRST_LAST_PROMPT,
              official, True)
    _end_image(w, (420, 1240))
    cond = w.node(40)
    cond.type = "Wan22DuoI2VKeyframes"
    cond.title = "First and last frame"
    cond.links = {"positive": (21, "CONDITIONING"), "negative": (22, "CONDITIONING"), "vae": (30, "vae"),
                  "start_image": (31, "IMAGE"), "end_image": (32, "IMAGE")}
    _replace_note(w, 2, w.node(2).widgets["text"] + "\n\n" + _FIRST_LAST_A14B_NOTE)
    return w


_FIRST_LAST_A14B_NOTE = (
    "### First and last frame\n\n"
    "**Wan 2.2 Duo I2V First-Last Frame / Keyframes** places the start image at frame 0 and the end image at the "
    "last frame of a mid-gray video, encodes it with the Wan 2.1 VAE and marks both frames known in the I2V mask: "
    "the same conditioning as ComfyUI's `WanFirstLastFrameToVideo` (either node feeds either sampler). Both images "
    "are center-cropped to the video's aspect ratio and resized bicubic. Chain **Wan 2.2 Duo Keyframe** nodes into "
    "its `keyframes` input to fix images at other frames (negative frame numbers count from the end). The official "
    "Wan 2.2 code conditions I2V-A14B on a start image only; the end frame uses the same mask channels."
)


def _ti2v_first_last() -> Workflow:
    w = _ti2v("ti2v_5b_first_last", True, FIRST_LAST_PROMPT)
    w.title = "TI2V-5B first-last frame"
    _end_image(w, (420, 1180))
    latent = w.node(40)
    latent.type = "Wan22DuoTI2VKeyframes"
    latent.title = "First and last frame (video size)"
    latent.links = {"vae": (30, "vae"), "start_image": (31, "IMAGE"), "end_image": (32, "IMAGE")}
    w.node(1).widgets = {"text": model_note("TI2V-5B first-last frame", [TI2V_5B, VAE22, UMT5], VAE_5B)}
    _replace_note(w, 2, _ti2v_note("TI2V-5B first-last frame", False) + "\n\n" + _FIRST_LAST_5B_NOTE)
    return w


_FIRST_LAST_5B_NOTE = (
    "### First and last frame on TI2V-5B\n\n"
    "The Wan 2.2 VAE packs 4 frames into each latent frame (frame 0 alone), and TI2V-5B keeps an image by holding "
    "whole latent frames fixed (timestep 0, written back after every step). So:\n\n"
    "- the **start image** is latent frame 0, exactly as in the plain image-to-video workflow;\n"
    "- the **end image** is held over the **last four frames** (the last latent frame): the video ends on a "
    "4-frame (1/6 s) still of it. Give 4 images to set those four frames yourself.\n\n"
    "The kept latent frames stay bit-exact, but the VAE decoder is causal: the last four frames are decoded from "
    "the kept latent *and* the generated frames before it, so the pack guarantees the end image's latent, not its "
    "pixels; they match the end image as far as the generated motion leads into it. The end latent is encoded "
    "after a still of the end image (not after gray), the context the generated frames should approach. The "
    "official code keeps only the first frame; keeping the last one as well is this pack's extension of the same "
    "mechanism, which the 5B model was not trained on."
)


def _i2v_extend(official: dict) -> Workflow:
    w = _a14b("i2v_a14b_extend", "I2V-A14B extended clip (two clips joined)", I2V_HIGH, I2V_LOW, I2V_PROMPT,
              official, True)
    first = w.node(50)
    dy = 940  # clip 2 sits below clip 1, its extend node just above its sampler
    w.add(Node(41, "Wan22DuoI2VExtend", (900, 760), (360, 180),
               {"length": 81, "overlap": EXTEND_OVERLAP},
               {"positive": (21, "CONDITIONING"), "negative": (22, "CONDITIONING"), "vae": (30, "vae"),
                "previous_images": (60, "images")}, title="Extend: the last 5 frames start clip 2"))
    links = {**first.links, "positive": (41, "positive"), "negative": (41, "negative"), "latent": (41, "latent")}
    w.add(Node(51, "Wan22DuoSampler", (900, 60 + dy), (360, 620), {**first.widgets, "seed": 43}, links,
               title="Sampler (clip 2)"))
    first.title = "Sampler (clip 1)"
    decode = {"tile_size": 0, "tile_overlap": 64, "auto_tile": False}
    w.add(Node(63, "Wan22DuoVAEDecode", (1340, 60 + dy), (300, 110), decode,
               {"vae": (30, "vae"), "samples": (51, "latent")}))
    w.add(Node(64, "Wan22DuoJoinClips", (1340, 220 + dy), (300, 110), {"overlap": EXTEND_OVERLAP},
               {"first": (60, "images"), "second": (63, "images"), "overlap": (41, "overlap")},
               title="Join (drop the overlap)"))
    w.node(61).links = {"images": (64, "images")}
    w.groups.append(("Clip 2: extend, sample, decode, join", [41, 51, 63, 64]))
    _replace_note(w, 2, w.node(2).widgets["text"] + "\n\n" + _extend_note(81, EXTEND_OVERLAP, 16.0))
    return w


def _extend_note(length: int, overlap: int, fps: float) -> str:
    total = 2 * length - overlap
    return (
        "### Extending past one clip\n\n"
        f"Clip 1 is a plain I2V run. **Wan 2.2 Duo I2V Extend Clip** takes its last `overlap` = {overlap} decoded "
        f"frames as the known first frames of clip 2 ({length} frames, same size), clip 2 is sampled like clip 1, and "
        f"**Wan 2.2 Duo Join Clips** appends it without repeating the overlap: {length} + {length} − {overlap} = "
        f"**{total} frames** ({total / fps:.1f} s at {fps:g} fps). The join takes its `overlap` from the extend node (a link), so the two always agree. Chain more "
        "extend → sample → decode → join groups for longer videos; each adds "
        f"{length - overlap} frames.\n\n"
        f"**What the overlap costs:** each extension samples {length} frames and keeps {length - overlap} new ones, so "
        f"per new frame it takes {length / (length - overlap):.3f}× the sampling time of clip 1 "
        f"(+{100 * overlap / (length - overlap):.1f} %), plus one VAE encode of its conditioning video, as any I2V "
        "run. A longer overlap shows the model more of the motion to continue, at one new frame per overlap frame."
    )


def describe_keyframes() -> list:
    """The keyframe and continuation workflows (issues 14 and 24)."""
    official_i2v = {"steps": 40, "cfg_high": 3.5, "cfg_low": 3.5, "shift": 5.0}
    return [_i2v_first_last(official_i2v), _ti2v_first_last(), _i2v_extend(official_i2v), _i2v_svi(official_i2v),
            _i2v_svi_disk(official_i2v)]


# ---------------------------------------------------------------- SVI 2.0 Pro continuation (issue 24)

HF_SVI = "https://huggingface.co/vita-video-gen/svi-model/resolve/main"
SVI_HIGH = model_file("SVI_Wan2.2-I2V-A14B_high_noise_lora_v2.0_pro.safetensors", "loras", HF_SVI)
SVI_HIGH["url"] = f"{HF_SVI}/version-2.0/{SVI_HIGH['name']}"
SVI_LOW = model_file("SVI_Wan2.2-I2V-A14B_low_noise_lora_v2.0_pro.safetensors", "loras", HF_SVI)
SVI_LOW["url"] = f"{HF_SVI}/version-2.0/{SVI_LOW['name']}"
SVI_MOTION_LATENTS = 1  # the SVI authors' default


def _i2v_svi(official: dict) -> Workflow:
    title = "I2V-A14B long video, SVI 2.0 Pro (two clips joined)"
    w = _a14b("i2v_a14b_svi", title, I2V_HIGH, I2V_LOW, I2V_PROMPT, official, True, size=(832, 480))
    for node_id, source, lora, which in ((12, 10, SVI_HIGH, "high"), (13, 11, SVI_LOW, "low")):
        w.add(Node(node_id, "Wan22DuoLoraLoader", (420, -300 if which == "high" else -160), (340, 110),
                   {"lora_name": lora["name"], "strength": 1.0}, {"model": (source, "model")},
                   title=f"SVI 2.0 Pro LoRA ({which}-noise)", models=[lora]))
    w.groups.insert(1, ("SVI LoRAs", [12, 13]))
    first = w.node(50)
    first.links.update(high_noise_model=(12, "model"), low_noise_model=(13, "model"))
    first.title = "Sampler (clip 1)"
    w.node(31).title = "Anchor image (start of clip 1, anchor of every clip)"
    svi = {"width": 832, "height": 480, "length": 81, "motion_latents": SVI_MOTION_LATENTS}
    text = {"positive": (21, "CONDITIONING"), "negative": (22, "CONDITIONING"), "vae": (30, "vae"),
            "anchor_image": (31, "IMAGE")}
    clip1 = w.node(40)
    clip1.type, clip1.widgets, clip1.links = "Wan22DuoI2VExtendSVI", dict(svi), dict(text)
    clip1.title = "SVI clip 1: anchor + zeros"
    dy = 940
    w.add(Node(41, "Wan22DuoI2VExtendSVI", (900, 760), (360, 260), dict(svi),
               {**text, "previous_latent": (50, "latent")}, title="SVI clip 2: anchor + clip 1's last latent frame"))
    links = {**first.links, "positive": (41, "positive"), "negative": (41, "negative"), "latent": (41, "latent")}
    w.add(Node(51, "Wan22DuoSampler", (900, 60 + dy), (360, 620), {**first.widgets, "seed": 43}, links,
               title="Sampler (clip 2)"))
    decode = {"tile_size": 0, "tile_overlap": 64, "auto_tile": False}
    w.add(Node(63, "Wan22DuoVAEDecode", (1340, 60 + dy), (300, 110), decode,
               {"vae": (30, "vae"), "samples": (51, "latent")}))
    w.add(Node(65, "Wan22DuoColorMatch", (1340, 220 + dy), (300, 170),
               {"match": "overlap", "overlap": 1 + 4 * SVI_MOTION_LATENTS, "strength": 1.0, "colour_space": "lab"},
               {"images": (63, "images"), "reference": (60, "images"), "overlap": (41, "overlap")},
               title="Colour match to clip 1 (against drift)"))
    w.add(Node(64, "Wan22DuoJoinClips", (1340, 420 + dy), (300, 110), {"overlap": 1 + 4 * SVI_MOTION_LATENTS},
               {"first": (60, "images"), "second": (65, "images"), "overlap": (41, "overlap")},
               title="Join (drop the anchor and motion frames)"))
    w.node(61).links = {"images": (64, "images")}
    w.groups.append(("Clip 2: SVI layout, sample, decode, colour match, join", [41, 51, 63, 65, 64]))
    models = [I2V_HIGH, I2V_LOW, SVI_HIGH, SVI_LOW, VAE21, UMT5]
    w.node(1).widgets = {"text": model_note(title, models, VAE_A14B)}
    _replace_note(w, 2, w.node(2).widgets["text"] + "\n\n" + _svi_note(81, SVI_MOTION_LATENTS, 16.0))
    return w


def _svi_note(length: int, k: int, fps: float) -> str:
    overlap = 1 + 4 * k
    total = 2 * length - overlap
    return (
        "### SVI 2.0 Pro continuation\n\n"
        "The Stable Video Infinity 2.0 Pro LoRAs (one per expert) were trained on their own I2V layout, which "
        "**Wan 2.2 Duo I2V Extend Clip, SVI 2.0 Pro layout** builds: latent frame 0 is the **anchor image encoded "
        f"alone**, the next {k} latent frame(s) are the **end of the previous clip's latent**, taken from its "
        "LATENT (no decode and re-encode, so no VAE round trip shifts its colours), the rest is zeros, and only the "
        "anchor frame is marked known. Clip 1 has no previous clip: anchor + zeros. Keep the same anchor for every "
        "clip.\n\n"
        f"Each SVI clip starts with the anchor's frame and {4 * k} frames that repeat the previous clip's end; the "
        f"node's `overlap` output ({overlap}) tells **Join Clips** to drop them: {length} + {length} − {overlap} = "
        f"**{total} frames** ({total / fps:.1f} s at {fps:g} fps). Chain more groups (previous_latent from the "
        f"last sampler) for longer videos; each adds {length - overlap} frames.\n\n"
        "**Colour match** gives clip 2 the colour statistics (Lab mean and spread) of the frames it shares with "
        "clip 1, against the drift of long chains; set its strength to 0 to compare. SVI was trained at 480p "
        "(832×480)."
    )


# ---------------------------------------------------------------- long video to disk (issue 24, memory)

DISK_DECODE = {"tile_size": 0, "tile_overlap": 64, "overlap": 0, "tail_frames": 5, "colour_match": "off",
               "colour_strength": 1.0, "colour_space": "lab", "auto_tile": False}


def _i2v_svi_disk(official: dict) -> Workflow:
    """The SVI chain of ``_i2v_svi`` with three clips, each decoded straight to disk and saved from there."""
    title = "I2V-A14B long video to disk, SVI 2.0 Pro (three clips)"
    w = _i2v_svi(official)
    w.name, w.title = "i2v_a14b_svi_disk", title
    dropped = {60, 61, 62, 63, 64, 65}
    w.nodes = [n for n in w.nodes if n.id not in dropped]
    w.groups = [(t, ids) for t, ids in w.groups if not set(ids) & dropped]
    dy = 940
    clip3 = w.node(41)
    w.add(Node(42, "Wan22DuoI2VExtendSVI", (900, 760 + dy), (360, 260), dict(clip3.widgets),
               {**clip3.links, "previous_latent": (51, "latent")}, title="SVI clip 3: anchor + clip 2's last latent frame"))
    second = w.node(51)
    second.title = "Sampler (clip 2)"
    links = {**second.links, "positive": (42, "positive"), "negative": (42, "negative"), "latent": (42, "latent")}
    w.add(Node(52, "Wan22DuoSampler", (900, 60 + 2 * dy), (360, 620), {**second.widgets, "seed": 44}, links,
               title="Sampler (clip 3)"))
    vae, anchor = (30, "vae"), (31, "IMAGE")
    w.add(Node(60, "Wan22DuoVAEDecodeToDisk", (1340, 60), (340, 330), dict(DISK_DECODE),
               {"vae": vae, "samples": (50, "latent")}, title="Decode clip 1 to disk"))
    matched = {**DISK_DECODE, "overlap": 1 + 4 * SVI_MOTION_LATENTS, "colour_match": "anchor"}
    for node_id, sampler, previous, extend, clip in ((63, 51, 60, 41, 2), (66, 52, 63, 42, 3)):
        w.add(Node(node_id, "Wan22DuoVAEDecodeToDisk", (1340, 60 + (clip - 1) * dy), (340, 330), dict(matched),
                   {"vae": vae, "samples": (sampler, "latent"), "previous_frames": (previous, "frames"),
                    "overlap": (extend, "overlap"), "anchor_image": anchor},
                   title=f"Decode clip {clip} to disk, append, colour match to the anchor"))
    w.add(Node(62, "Wan22DuoSaveVideoFromDisk", (1740, 60), (400, 200),
               {"fps": 16.0, "filename_prefix": "video/wan22duo_i2v_a14b_svi_disk", "crf": 19},
               {"frames": (66, "frames")}, title="Save the whole video (read from disk)"))
    w.groups.append(("Clip 1: decode to disk", [60]))
    w.groups.append(("Clip 2: SVI layout, sample, decode to disk", [41, 51, 63]))
    w.groups.append(("Clip 3: SVI layout, sample, decode to disk", [42, 52, 66]))
    w.groups.append(("Save", [62]))
    _replace_note(w, 1, model_note(title, [I2V_HIGH, I2V_LOW, SVI_HIGH, SVI_LOW, VAE21, UMT5], VAE_A14B))
    note = w.node(2).widgets["text"].split("### SVI 2.0 Pro continuation")[0]
    _replace_note(w, 2, note + _svi_note(81, SVI_MOTION_LATENTS, 16.0).split("**Colour match**")[0]
                  + _disk_note(3, 81, 1 + 4 * SVI_MOTION_LATENTS, 16.0))
    return w


def _disk_note(clips: int, length: int, overlap: int, fps: float) -> str:
    total = length + (clips - 1) * (length - overlap)
    return (
        "### Long video to disk\n\n"
        "**Wan 2.2 Duo VAE Decode to Disk** decodes each clip one latent frame at a time and writes its frames "
        "(8-bit) to a file in ComfyUI's temp folder instead of returning an IMAGE; given the previous clip's "
        f"`frames` and the SVI node's `overlap` ({overlap}), it drops the repeated frames and appends the clip: "
        f"{length} + {clips - 1} × {length - overlap} = **{total} frames** ({total / fps:.1f} s at {fps:g} fps). "
        "**Save Video (from disk frames)** encodes the MP4 reading one frame at a time, so the video never sits "
        "in RAM: host RAM stays about the same for 3 clips or 30 (bench/results_drift.md). Chain more clips by "
        "copying a clip group and linking its previous_latent, previous_frames and overlap.\n\n"
        "Clips 2 and 3 get the colour statistics of the anchor image (colour_match = anchor), against the drift "
        "of long chains; set colour_match to off to compare."
    )


# ---------------------------------------------------------------- phase plans (issue 23)
# The three-stage Lightning recipe in one sampler: a leading phase (the base high-noise expert with
# CFG) in front of the Lightning-LoRA experts, on one schedule.

THREE_STAGE = {"steps": 8, "cfg_high": 1.0, "cfg_low": 1.0, "shift": 5.0, "sampler": "euler", "scheduler": "simple"}
THREE_STAGE_LEAD = {"cfg": 3.5, "steps": 2}


def _three_stage() -> Workflow:
    title = "T2V-A14B Lightning, three stages (8 steps)"
    w = _a14b("t2v_a14b_lightning_3stage", title, T2V_HIGH, T2V_LOW, T2V_PROMPT, dict(THREE_STAGE), False,
              size=(832, 480), lightning=True)
    w.add(Node(14, "Wan22DuoPhase", (420, -20), (340, 130), dict(THREE_STAGE_LEAD), {"model": (10, "model")},
               title="Stage 1: base high-noise expert with CFG", color=GREEN))
    w.node(50).links["lead_phases"] = (14, "lead_phases")
    steps, lead = THREE_STAGE["steps"], THREE_STAGE_LEAD["steps"]
    k = _switch_split(steps, THREE_STAGE["shift"], 0.875, THREE_STAGE["scheduler"])
    _replace_note(w, 2, _three_stage_note(title, steps, lead, k))
    w.groups.insert(1, ("Stage 1 (leading phase)", [14]))
    return w


def _three_stage_note(title: str, steps: int, lead: int, k: int) -> str:
    return "\n".join([
        f"## {title}",
        "",
        "The three-stage Lightning recipe in **one sampler**, on one schedule and one trajectory (nothing is "
        "re-noised between stages):",
        "",
        f"1. steps 1-{lead}: the **base high-noise expert** at cfg {THREE_STAGE_LEAD['cfg']:g} (the "
        "**Wan 2.2 Duo Leading Phase** node), which keeps the motion the distilled LoRA tends to lose;",
        f"2. steps {lead + 1}-{k}: the high-noise expert **with the Lightning LoRA** at cfg 1;",
        f"3. steps {k + 1}-{steps}: the low-noise expert **with the Lightning LoRA** at cfg 1.",
        "",
        f"The hand-over to the low-noise expert is still the official boundary rule (0.875): {steps} steps at "
        f"shift {THREE_STAGE['shift']:g} ({THREE_STAGE['scheduler']} schedule, {THREE_STAGE['sampler']}) give "
        f"{k} high-noise steps. The phase's `steps` count on the sampler's steps and must end at or before "
        "the switch; chain more phase nodes for more stages. The same plan by hand is three KSamplerAdvanced "
        "nodes (0-2, 2-4, 4-8, leftover noise kept between them); this node gives the same result "
        "(integration suite) and shows the stages after each run.",
        "",
        "**Memory:** the base and the Lightning high-noise models are the same file under two LoRA chains; "
        "under `offload_cpu` only the running one sits on the GPU.",
    ])


def describe_phases() -> list:
    """The phase-plan workflows (issue 23)."""
    return [_three_stage()]


# ---------------------------------------------------------------- long video: context windows (issue 24)
# T2V-A14B at 832x480 for 161 frames (10 s at 16 fps): twice the model's 81-frame clip, denoised in
# overlapping 81-frame windows at every step (Wan22DuoContextWindows on the sampler).

LONG_VIDEO = {"length": 161, "size": (832, 480)}
LONG_WINDOWS = {"context_length": 81, "context_overlap": 32, "schedule": "uniform", "fuse": "pyramid",
                "causal_anchor": True, "freenoise": True, "retain_first_frame": False}


def _long_video() -> Workflow:
    title = "T2V-A14B long video (context windows)"
    w = _a14b("t2v_a14b_long_windows", title, T2V_HIGH, T2V_LOW, T2V_PROMPT, {}, False, size=LONG_VIDEO["size"])
    w.node(40).widgets["length"] = LONG_VIDEO["length"]
    w.add(Node(15, "Wan22DuoContextWindows", (420, -20), (340, 250), dict(LONG_WINDOWS),
               title="Context windows (81-frame windows)", color=GREEN))
    w.node(50).links["context_windows"] = (15, "context_windows")
    _replace_note(w, 2, _long_video_note(title))
    w.groups.insert(1, ("Context windows", [15]))
    return w


def _long_video_note(title: str) -> str:
    from packpath import load_pack

    load_pack()
    from wan22duo.engine.sampling.context_windows import ContextWindows

    length, window, overlap = LONG_VIDEO["length"], LONG_WINDOWS["context_length"], LONG_WINDOWS["context_overlap"]
    windows = ContextWindows.from_video_frames(window, overlap, schedule=LONG_WINDOWS["schedule"])
    latent, lw, lo = (length - 1) // 4 + 1, windows.length, windows.overlap
    counts = sorted({len(windows.windows(latent, step)) for step in range(40)})
    count = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return "\n".join([
        f"## {title}",
        "",
        f"{length} frames (about {length / 16:.0f} s at 16 fps) is longer than the {window} frames Wan 2.2 A14B was trained "
        f"on. **Wan 2.2 Duo Context Windows** makes the sampler denoise the video in overlapping windows at every "
        f"step: {window}-frame windows ({lw} latent frames) that share {overlap} frames ({lo} latent frames), "
        f"{count} windows per step here, blended frame by frame (`pyramid`: by distance from a window's edge). "
        "Both experts use the same windows, and the official boundary rule still decides the switch.",
        "",
        "- `uniform` shifts the windows a little at every step so their seams do not stay in one place "
        "(`static` keeps them fixed);",
        "- `causal_anchor` gives each window after the first the latent frame before it as context, because Wan "
        "treats a clip's first latent frame as its start;",
        "- `freenoise` starts frames past the first window from shuffled copies of earlier noise "
        "(deterministic per seed), which keeps the windows' content consistent.",
        "",
        f"**Cost and memory:** each step runs the model once per window ({count}x an {window}-frame clip here), "
        "but the GPU only ever holds one window's activations, and the memory budget counts one window. A video "
        "no longer than one window runs exactly as without the node.",
        "",
        "Windows keep one scene but can repeat motion and show seams; for I2V the start image conditions only the "
        "first window. To continue a clip from its last frames instead, see the extend workflow.",
    ])


def describe_long_video() -> list:
    """The context-window workflow (issue 24)."""
    return [_long_video()]


# ---------------------------------------------------------------- serialisation


def _order(w: Workflow) -> dict:
    """Execution order (a topological order by node id), as the editor stores it in ``order``."""
    done: dict = {}

    def visit(node: Node, trail: tuple) -> None:
        if node.id in done:
            return
        if node.id in trail:
            raise ValueError(f"{w.name}: cycle through node {node.id}")
        for source, _ in node.links.values():
            visit(w.node(source), trail + (node.id,))
        done[node.id] = len(done)

    for node in sorted(w.nodes, key=lambda n: (n.type not in UI_ONLY, n.id)):
        visit(node, ())
    return done


def _check_widgets(w: Workflow, node: Node, schema: NodeSchema) -> None:
    widget_names = [s.name for s in schema.inputs if s.is_widget]
    unknown = set(node.widgets) - set(widget_names)
    if unknown:
        raise ValueError(f"{w.name}: node {node.id} ({node.type}) has no widget(s) {sorted(unknown)}")
    missing = [s.name for s in schema.inputs if s.is_widget and s.name not in node.widgets and not s.optional]
    if missing:
        raise ValueError(f"{w.name}: node {node.id} ({node.type}) needs value(s) for {missing}")


def to_ui(w: Workflow, schemas: dict) -> dict:
    order = _order(w)
    links: list = []
    out_links: dict = {}  # (node id, slot) -> [link ids]
    ui_nodes = []
    for node in sorted(w.nodes, key=lambda n: n.id):
        entry = {"id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size),
                 "flags": {}, "order": order[node.id], "mode": 0, "inputs": [], "outputs": []}
        if node.type in UI_ONLY:
            entry.update(title=node.title, properties={}, widgets_values=[node.widgets["text"]])
        else:
            schema = schemas[node.type]
            _check_widgets(w, node, schema)
            def link_into(name: str, slot: int) -> int:
                """Record the link from ``node.links[name]`` into this node's input ``slot``; its id."""
                source, out_name = node.links[name]
                src_schema = schemas[w.node(source).type]
                src_slot = src_schema.output_index(out_name)
                link_id = len(links) + 1
                links.append([link_id, source, src_slot, node.id, slot, src_schema.outputs[src_slot][1]])
                out_links.setdefault((source, src_slot), []).append(link_id)
                return link_id

            sockets = [s for s in schema.inputs if not s.is_widget]
            for slot, spec in enumerate(sockets):
                link_id = None
                if spec.name in node.links:
                    link_id = link_into(spec.name, slot)
                elif not spec.optional:
                    raise ValueError(f"{w.name}: node {node.id} ({node.type}) input {spec.name!r} is not linked")
                item = {"name": spec.name, "type": spec.type, "link": link_id}
                if spec.optional:
                    item["shape"] = 7  # the editor draws optional sockets hollow
                entry["inputs"].append(item)
            for spec in schema.inputs:  # a widget fed by a link: an input slot that names its widget
                if spec.is_widget and spec.name in node.links:
                    link_id = link_into(spec.name, len(entry["inputs"]))
                    entry["inputs"].append({"name": spec.name, "type": spec.type, "widget": {"name": spec.name},
                                            "link": link_id})
            entry["outputs"] = [{"name": n, "type": t, "slot_index": i, "links": None}
                                for i, (n, t) in enumerate(schema.outputs)]
            if node.title:
                entry["title"] = node.title
            props = {"Node name for S&R": node.type}
            if schema.cnr:
                props.update({"cnr_id": schema.cnr[0], "ver": schema.cnr[1]})
            else:
                props.update({"cnr_id": "comfy-core", "ver": COMFY_VERSION} if schema.core else {"ver": PACK_VERSION})
            if node.models:
                props["models"] = node.models
            entry["properties"] = props
            values = []
            for spec in schema.inputs:
                if spec.is_widget and spec.name in node.widgets:
                    values.append(node.widgets[spec.name])
                    values.extend(spec.ui_extras())
            entry["widgets_values"] = values
        if node.color:
            entry["color"], entry["bgcolor"] = node.color
        ui_nodes.append(entry)
    for entry in ui_nodes:
        for slot, output in enumerate(entry["outputs"]):
            output["links"] = out_links.get((entry["id"], slot), [])
    return {
        "id": w.uid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"wan22duo/{w.name}")),
        "revision": 0,
        "last_node_id": max(n.id for n in w.nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": _groups(w),
        "config": {},
        "extra": {"ds": first_view(w)},
        "version": 0.4,
    }


def _groups(w: Workflow) -> list:
    return [{"id": i, "title": title, "bounding": group_box(w, ids), "color": "#3f789e", "font_size": 24, "flags": {}}
            for i, (title, ids) in enumerate(w.groups, start=1)]


def to_api(w: Workflow, schemas: dict) -> dict:
    api = {}
    for node in sorted(w.nodes, key=lambda n: n.id):
        if node.type in UI_ONLY:
            continue
        schema = schemas[node.type]
        _check_widgets(w, node, schema)
        inputs: dict = {}
        for spec in schema.inputs:
            if spec.name in node.links:
                source, out_name = node.links[spec.name]
                inputs[spec.name] = [str(source), schemas[w.node(source).type].output_index(out_name)]
            elif spec.is_widget and spec.name in node.widgets:
                inputs[spec.name] = node.widgets[spec.name]
        api[str(node.id)] = {"inputs": inputs, "class_type": node.type,
                             "_meta": {"title": node.title or schema.display_name}}
    return api


def dump(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def laid_out() -> list:
    """Every bundled workflow, placed by ``workflow_layout.arrange``; refuses a layout that covers a node."""
    sizes = load_sizes()
    workflows = describe() + describe_native() + describe_keyframes() + describe_phases() + describe_long_video()
    for w in workflows:
        arrange(w, sizes)
        problems = layout_problems(w)
        if problems:
            raise ValueError("the layout covers nodes:\n" + "\n".join(problems))
    return workflows


def _sampler_curve(w: Workflow) -> tuple:
    """(sigmas, high-noise step count, caption) of the workflow's first sampler, for its thumbnail."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from packpath import load_pack

    load_pack()
    from wan22duo.engine.sampling.schedule import boundary_switch_step, make_schedule

    s = next(n for n in sorted(w.nodes, key=lambda n: n.id) if n.type in ("Wan22DuoSampler", "Wan22DuoModelSampler"))
    v = s.widgets
    schedule = make_schedule(v["scheduler"], v["steps"], v["shift"])
    sigmas = [float(x) for x in schedule.sigmas]
    if w.name.startswith("ti2v"):
        return sigmas, v["steps"], f"one model, {v['steps']} steps"
    k = boundary_switch_step(schedule.timesteps, 0.900 if "i2v" in w.name else 0.875)
    return sigmas, k, f"high-noise steps 1–{k}, low-noise {k + 1}–{v['steps']}"


def ui_path(name: str, suffix: str = ".json") -> Path:
    """``example_workflows/NN <card title>.json`` of workflow ``name`` (its template card, ``template_cards.py``)."""
    return UI_DIR / f"{file_stem(name)}{suffix}"


def _toy_strip(name: str):
    """(strip image, caption, run) of workflow ``name``'s committed toy strip (``toy_strips.py``), or None (TI2V-5B)."""
    from PIL import Image
    from toy_strips import STEPS, spec, strip_path

    s = spec(name)
    if s is None:
        return None
    path = strip_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the toy strip of {name}'s card; run python scripts/toy_strips.py")
    with Image.open(path) as image:
        return image.convert("RGB"), s.caption, f"toy {s.task.upper()}, {STEPS} steps"


def write_thumbnails(workflows: list) -> None:
    from workflow_thumbnails import write

    for w in workflows:
        write(w, ui_path(w.name, ".jpg"), card(w.name).description, *_sampler_curve(w), toy=_toy_strip(w.name))


def stale_ui_files(workflows: list) -> list:
    """Files in example_workflows/ that no workflow writes (a renamed or removed card): ComfyUI would list them."""
    kept = {ui_path(w.name, suffix).name for w in workflows for suffix in (".json", ".jpg")}
    return sorted(p for p in UI_DIR.iterdir() if p.is_file() and p.name not in kept)


def render(schemas: Optional[dict] = None, workflows: Optional[list] = None) -> dict:
    """``{path: text}`` for every generated file."""
    schemas = schemas if schemas is not None else load_schemas()
    files = {}
    for w in workflows if workflows is not None else laid_out():
        files[ui_path(w.name)] = dump(to_ui(w, schemas))
        files[API_DIR / f"{w.name}.json"] = dump(to_api(w, schemas))
    return files


def core_reference_files(reference: Path) -> dict:
    """``{path: text}`` of the core-node subset and the digests, from a ComfyUI /object_info file.

    An unreadable file, or one that is not an /object_info answer, stops with one line naming it."""
    where = f"--core-reference {reference}"
    try:
        info = json.loads(Path(reference).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SystemExit(f"error: {where}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise SystemExit(f"error: {where} is not UTF-8 text; expected ComfyUI's /object_info JSON") from None
    except (ValueError, RecursionError) as exc:
        raise SystemExit(f"error: {where} is not valid JSON ({str(exc) or 'nested too deeply'})") from None
    if not isinstance(info, dict):
        raise SystemExit(f"error: {where} holds a JSON {type(info).__name__}; expected ComfyUI's /object_info "
                         "object ({node id: schema})")
    missing = [n for n in CORE_NODES if n not in info]
    if missing:
        raise SystemExit(f"error: {where} has no entry for {missing}; is it ComfyUI's /object_info?")
    return {CORE_SCHEMA: dump({n: info[n] for n in CORE_NODES}), NODE_DIGESTS: dump(node_digests(info))}


def schema_digest(entry: Any) -> str:
    """sha256 of one node schema in canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def node_digests(info: dict) -> dict:
    """``{node id: schema digest}`` for a whole /object_info answer, ids sorted."""
    return {name: schema_digest(info[name]) for name in sorted(info)}


def update(files: dict, write: bool) -> list:
    """The paths whose committed text differs from ``files``; written too when ``write`` (never under --check)."""
    stale = []
    for path, text in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {_shown(path)}")
    return stale


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    parser.add_argument("--core-reference", type=Path,
                        help="ComfyUI /object_info JSON to refresh the committed core-node subset from")
    args = parser.parse_args(argv)
    stale = []
    if args.core_reference:  # first: the workflows are rendered from the (refreshed) core schema
        stale += update(core_reference_files(args.core_reference), write=not args.check)
    workflows = laid_out()
    stale += update(render(workflows=workflows), write=not args.check)
    for path in stale_ui_files(workflows):
        stale.append(path)
        if not args.check:
            path.unlink()
            print(f"removed {_shown(path)} (no workflow has this card name)")
    if args.check and stale:
        print("out of date: " + ", ".join(_shown(p) for p in stale))
        return 1
    if not args.check:
        write_thumbnails(workflows)  # JPEG bytes vary by Pillow build: written, never compared
    return 0


if __name__ == "__main__":
    sys.exit(main())
