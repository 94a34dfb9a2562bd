"""The bundled workflows: UI copies (example_workflows/) and API copies (workflows/api/).

Schemas come from our nodes' INPUT_TYPES and, for ComfyUI core nodes, from the committed subset
of ComfyUI 0.3.76's /object_info. The UI -> API conversion here is written independently of
scripts/build_workflows.py, so a positional mistake in either shows up as a disagreement.
"""
import json
import sys
from pathlib import Path

import pytest

from _reference import object_info_path
from wan22duo.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, example_images

ROOT = Path(__file__).resolve().parent.parent
UI_DIR = ROOT / "example_workflows"
API_DIR = ROOT / "workflows" / "api"
CORE = json.loads((ROOT / "workflows" / "schema" / "comfyui-0.3.76-core-nodes.json").read_text(encoding="utf-8"))
# city96's ComfyUI-GGUF nodes the workflows use (integration/test_model_sampler.py checks it against the live node)
GGUF = json.loads((ROOT / "workflows" / "schema" / "comfyui-gguf-nodes.json").read_text(encoding="utf-8"))
FULL_REFERENCE = object_info_path()
sys.path.insert(0, str(ROOT / "scripts"))
import template_cards  # noqa: E402  (the template cards: each UI file is named "NN <card title>.json")
UI_ONLY = {"MarkdownNote", "Note"}
DISK_SAVE, DISK_DECODE = "Wan22DuoSaveVideoFromDisk", "Wan22DuoVAEDecodeToDisk"
WIDGET_KINDS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
# Inputs whose choices are the files of a model folder (empty or install-specific in any schema dump).
FILE_INPUTS = {"unet_name": "diffusion_models", "vae_name": "vae", "lora_name": "loras", "clip_name": "text_encoders"}
NAMES = ["t2v_a14b", "i2v_a14b", "ti2v_5b_t2v", "ti2v_5b_i2v", "t2v_a14b_lightning"]
# ComfyUI's own loaders + Wan22DuoModelSampler (issue 10)
NATIVE = ["t2v_a14b_native", "i2v_a14b_native", "ti2v_5b_native", "t2v_a14b_gguf"]
NAMES += NATIVE
KEYFRAME_NAMES = ["i2v_a14b_first_last", "ti2v_5b_first_last", "i2v_a14b_extend"]  # issue 14
NAMES += KEYFRAME_NAMES
NAMES += ["t2v_a14b_lightning_3stage"]  # issue 23: a leading phase in front of the Lightning experts
NAMES += ["i2v_a14b_svi"]  # issue 24: SVI 2.0 Pro continuation
NAMES += ["t2v_a14b_long_windows"]  # issue 24: context windows on the official T2V settings, 161 frames
NAMES += ["i2v_a14b_svi_disk"]  # issue 24: the SVI chain decoded to disk and saved from there (RAM flat)
CLIPS = {"i2v_a14b_extend": 2, "i2v_a14b_svi": 2, "i2v_a14b_svi_disk": 3}  # samplers (clips), 1 unless listed
SIZED = {"i2v_a14b_svi": 2, "i2v_a14b_svi_disk": 3}  # nodes with width/height/length, 1 unless listed (each SVI clip node has them)
OFFICIAL_NEGATIVE = (  # spec §1.2, verbatim
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


# ---------------------------------------------------------------- schemas


def _spec(name, raw, optional):
    kind, opts = raw[0], (raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {})
    choices = None
    if isinstance(kind, (list, tuple)):
        kind, choices = "COMBO", list(kind)
    elif kind == "COMBO":
        choices = list(opts.get("options", []))
    widget = kind in WIDGET_KINDS and not opts.get("forceInput")
    return {"name": name, "type": kind, "opts": opts, "choices": choices, "optional": optional, "widget": widget}


def schema(class_type):
    if class_type in NODE_CLASS_MAPPINGS:
        cls = NODE_CLASS_MAPPINGS[class_type]
        types = cls.INPUT_TYPES()
        inputs = [_spec(n, r, sec == "optional")
                  for sec in ("required", "optional") for n, r in types.get(sec, {}).items()]
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        title = NODE_DISPLAY_NAME_MAPPINGS.get(class_type, class_type)
        return {"inputs": inputs, "outputs": list(zip(names, cls.RETURN_TYPES)), "title": title}
    info = CORE[class_type] if class_type in CORE else GGUF[class_type]
    inputs = [_spec(n, info["input"][sec][n], sec == "optional")
              for sec in ("required", "optional") for n in info["input_order"].get(sec, [])]
    return {"inputs": inputs, "outputs": list(zip(info["output_name"], info["output"])),
            "title": info["display_name"] or class_type}


def ui_extras(spec):
    """How many frontend-only values follow this widget in widgets_values."""
    if spec["type"] == "INT" and spec["opts"].get("control_after_generate", spec["name"] in ("seed", "noise_seed")):
        return "control"
    if spec["type"] == "COMBO" and spec["opts"].get("image_upload"):
        return "upload"
    return None


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def ui_to_api(ui):
    """Independent UI -> API conversion: named widget values, links as [source id, slot]."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node["type"] in UI_ONLY:
            continue
        values = list(node["widgets_values"])
        inputs = {}
        for spec in (s for s in schema(node["type"])["inputs"] if s["widget"]):
            assert values, f"node {node['id']} ({node['type']}): no widget value left for {spec['name']}"
            inputs[spec["name"]] = values.pop(0)
            extra = ui_extras(spec)
            if extra == "control":
                assert values.pop(0) in CONTROL_VALUES, f"node {node['id']}: control_after_generate missing"
            elif extra == "upload":
                assert values.pop(0) == "image"
        assert values == [], f"node {node['id']} ({node['type']}): extra widget values {values}"
        for slot, item in enumerate(node["inputs"]):
            if item["link"] is not None:
                link = links[item["link"]]
                assert (link[3], link[4]) == (node["id"], slot), f"link {link} does not end at node {node['id']}"
                inputs[item["name"]] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


UI_FILES = sorted(UI_DIR.glob("*.json"))
NAME_OF = {template_cards.file_stem(c.name): c.name for c in template_cards.CARDS}  # UI file stem -> name


def ui_file(name):
    return UI_DIR / f"{template_cards.file_stem(name)}.json"

API_FILES = sorted(API_DIR.glob("*.json"))
ALL = [pytest.param(p, id=f"ui-{p.stem}") for p in UI_FILES] + [pytest.param(p, id=f"api-{p.stem}") for p in API_FILES]


def api_form(path):
    data = load(path)
    return ui_to_api(data) if "nodes" in data else data


# ---------------------------------------------------------------- where ComfyUI finds them


def test_every_workflow_has_a_ui_and_an_api_copy():
    assert sorted(NAME_OF.get(p.stem, p.stem) for p in UI_FILES) == sorted(NAMES)
    assert sorted(p.stem for p in API_FILES) == sorted(NAMES)
    # ComfyUI 0.3.76 lists <pack>/{example_workflows,example,examples,workflow,workflows}/*.json as
    # templates; API files directly in workflows/ would show up there as broken templates.
    for folder in ("workflows", "workflow", "example", "examples"):
        assert list((ROOT / folder).glob("*.json")) == [], f"{folder}/*.json would be listed as templates"


# ---------------------------------------------------------------- graph checks


@pytest.mark.parametrize("path", ALL)
def test_only_registered_node_types(path):
    data = load(path)
    is_ui = "nodes" in data
    types = [n["type"] for n in data["nodes"]] if is_ui else [n["class_type"] for n in data.values()]
    for class_type in types:
        known = (class_type in NODE_CLASS_MAPPINGS or class_type in CORE or class_type in GGUF
                 or (is_ui and class_type in UI_ONLY))
        assert known, f"{path.name}: {class_type} is neither ours, a ComfyUI 0.3.76 core / ComfyUI-GGUF node nor a note"


@pytest.mark.parametrize("path", ALL)
def test_inputs_exist_required_are_set_and_links_match_types(path):
    api = api_form(path)
    for node_id, node in api.items():
        sch = schema(node["class_type"])
        specs = {s["name"]: s for s in sch["inputs"]}
        where = f"{path.name}: node {node_id} ({node['class_type']})"
        for name, value in node["inputs"].items():
            assert name in specs, f"{where} has no input {name!r}"
            spec = specs[name]
            if isinstance(value, list):
                source_id, slot = value
                assert source_id in api, f"{where}: {name} links to missing node {source_id}"
                outputs = schema(api[source_id]["class_type"])["outputs"]
                assert 0 <= slot < len(outputs), f"{where}: {name} links to output {slot} of {source_id}"
                assert outputs[slot][1] == spec["type"], f"{where}: {name} wants {spec['type']}, gets {outputs[slot]}"
            else:
                assert spec["widget"], f"{where}: {name} is a socket and must be linked, got {value!r}"
        for spec in sch["inputs"]:
            assert spec["optional"] or spec["name"] in node["inputs"], f"{where}: required {spec['name']} unset"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_links_are_consistent(path):
    ui = load(path)
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == max(link[0] for link in ui["links"])
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        out, inp = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert link_id in out["links"] and inp["link"] == link_id
        assert out["type"] == kind == inp["type"], f"link {link_id}: {out['type']} -> {inp['type']} ({kind})"
        assert schema(nodes[src]["type"])["outputs"][src_slot][1] == kind
        assert {s["name"]: s["type"] for s in schema(nodes[dst]["type"])["inputs"]}[inp["name"]] == kind
    linked = {(link[1], link[2]) for link in ui["links"]}
    for node in ui["nodes"]:
        for slot, out in enumerate(node["outputs"]):
            assert bool(out["links"]) == ((node["id"], slot) in linked)


def _check_value(where, spec, value):
    kind, opts = spec["type"], spec["opts"]
    if kind == "COMBO":
        if spec["name"] in FILE_INPUTS or (spec["name"] == "image" and opts.get("image_upload")):
            assert isinstance(value, str) and value, f"{where}: file name expected, got {value!r}"
        else:
            assert value in spec["choices"], f"{where}: {value!r} not in {spec['choices']}"
    elif kind in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r}"
        if kind == "INT":
            assert isinstance(value, int), f"{where}: INT expected, got {value!r}"
        assert opts.get("min", value) <= value <= opts.get("max", value), f"{where}: {value} outside {opts}"
        step = opts.get("step", 1)
        if kind == "INT" and step > 1:
            assert (value - opts.get("min", 0)) % step == 0, f"{where}: {value} not on the step {step} grid"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: {value!r}"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {value!r}"


@pytest.mark.parametrize("path", ALL)
def test_widget_values_are_within_the_schema(path):
    for node_id, node in api_form(path).items():
        for spec in schema(node["class_type"])["inputs"]:
            if spec["widget"] and spec["name"] in node["inputs"] and not isinstance(node["inputs"][spec["name"]], list):
                where = f"{path.name}: node {node_id} ({node['class_type']}) {spec['name']}"
                _check_value(where, spec, node["inputs"][spec["name"]])


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_copies_agree(name):
    ui, api = load(ui_file(name)), load(API_DIR / f"{name}.json")
    assert ui_to_api(ui) == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    for node in ui["nodes"]:
        if node["type"] not in UI_ONLY:
            title = node.get("title") or schema(node["type"])["title"]
            assert api[str(node["id"])]["_meta"]["title"] == title


# ---------------------------------------------------------------- models and notes


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_loaders_offer_their_downloads_and_the_note_names_them(path):
    ui = load(path)
    notes = "\n".join(n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "MarkdownNote")
    api = ui_to_api(ui)
    seen = 0
    for node in ui["nodes"]:
        for name, folder in FILE_INPUTS.items():
            value = api.get(str(node["id"]), {}).get("inputs", {}).get(name)
            if value is None:
                continue
            seen += 1
            models = node["properties"].get("models", [])
            if node["type"] == "UnetLoaderGGUF":
                # No Missing Models entry: ComfyUI 0.3.76's dialog checks entries against its own lists (never
                # .gguf) and refuses the unet folder, so it marked installed GGUF experts "Invalid directory
                # specified". The note keeps the download link (community GGUF files live in models/unet).
                assert models == [], f"{path.name}: node {node['id']} models {models}"
                url = ("https://huggingface.co/QuantStack/Wan2.2-T2V-A14B-GGUF/resolve/main/"
                       f"{'HighNoise' if 'HighNoise' in value else 'LowNoise'}/{value}")
                assert f"[{value}]({url}) → `models/unet/`" in notes, f"{path.name}: note lacks the link to {value}"
                continue
            assert [m["name"] for m in models] == [value], f"{path.name}: node {node['id']} models {models}"
            entry = models[0]
            if value.startswith("SVI_"):  # the SVI authors' own repository (vita-video-gen/svi-model)
                svi = "https://huggingface.co/vita-video-gen/svi-model/resolve/main/version-2.0"
                assert entry["url"] == f"{svi}/{value}"
            else:
                assert entry["url"].startswith("https://huggingface.co/Comfy-Org/")
                assert entry["url"].endswith(f"/resolve/main/split_files/{folder}/{value}")
            assert entry["directory"] == folder
            assert value in notes and f"models/{folder}/" in notes, f"{path.name}: note lacks {value}"
    # two experts or one TI2V-5B model, the text encoder, the VAE, and the two Lightning LoRAs
    single = {"ti2v_5b_t2v": 3, "ti2v_5b_i2v": 3, "t2v_a14b_lightning": 6, "ti2v_5b_native": 3,
              "ti2v_5b_first_last": 3, "t2v_a14b_lightning_3stage": 6, "i2v_a14b_svi": 6,
              "i2v_a14b_svi_disk": 6}
    assert seen == single.get(NAME_OF[path.stem], 4)


# ---------------------------------------------------------------- official settings


def _by_class(api, class_type):
    return [n["inputs"] for n in api.values() if n["class_type"] == class_type]


OFFICIAL = {  # spec §1.2; Lightning: Comfy-Org 4-step templates (landscape §0)
    "t2v_a14b": dict(steps=40, cfg_high=4.0, cfg_low=3.0, shift=12.0, sampler="unipc", scheduler="wan",
                     size=(1280, 720, 81), fps=16.0, vae="wan_2.1_vae.safetensors"),
    "i2v_a14b": dict(steps=40, cfg_high=3.5, cfg_low=3.5, shift=5.0, sampler="unipc", scheduler="wan",
                     size=(1280, 720, 81), fps=16.0, vae="wan_2.1_vae.safetensors"),
    "ti2v_5b_t2v": dict(steps=50, cfg_high=5.0, shift=5.0, sampler="unipc", scheduler="wan",
                        size=(1280, 704, 121), fps=24.0, vae="wan2.2_vae.safetensors"),
    "ti2v_5b_i2v": dict(steps=50, cfg_high=5.0, shift=5.0, sampler="unipc", scheduler="wan",
                        size=(1280, 704, 121), fps=24.0, vae="wan2.2_vae.safetensors"),
    "t2v_a14b_lightning": dict(steps=4, cfg_high=1.0, cfg_low=1.0, shift=5.0, sampler="euler", scheduler="simple",
                               size=(832, 480, 81), fps=16.0, vae="wan_2.1_vae.safetensors"),
}
OFFICIAL["i2v_a14b_first_last"] = OFFICIAL["i2v_a14b_extend"] = OFFICIAL["i2v_a14b"]
OFFICIAL["ti2v_5b_first_last"] = OFFICIAL["ti2v_5b_i2v"]
# The three-stage recipe of issue 23 (not an official template): 8 steps; its stages are checked below.
OFFICIAL["t2v_a14b_lightning_3stage"] = {**OFFICIAL["t2v_a14b_lightning"], "steps": 8}
# SVI 2.0 Pro: official I2V sampling at 480p, the size the SVI LoRAs were trained at
OFFICIAL["i2v_a14b_svi"] = OFFICIAL["i2v_a14b_svi_disk"] = {**OFFICIAL["i2v_a14b"], "size": (832, 480, 81)}
# Issue 24: the official T2V-A14B settings at 832x480 for 161 frames, in context windows.
OFFICIAL["t2v_a14b_long_windows"] = {**OFFICIAL["t2v_a14b"], "size": (832, 480, 161)}
IMAGES = {"i2v_a14b": 1, "ti2v_5b_i2v": 1, "i2v_a14b_extend": 1, "i2v_a14b_first_last": 2, "ti2v_5b_first_last": 2,
          "i2v_a14b_svi": 1, "i2v_a14b_svi_disk": 1}


@pytest.mark.parametrize("name", [n for n in NAMES if n not in NATIVE])
def test_official_settings(name):
    api, want = load(API_DIR / f"{name}.json"), OFFICIAL[name]
    samplers = _by_class(api, "Wan22DuoSampler")
    assert len(samplers) == CLIPS.get(name, 1)
    for sampler in samplers:
        for key in ("steps", "cfg_high", "cfg_low", "shift", "sampler", "scheduler"):
            if key in want:
                assert sampler[key] == want[key], f"{name}: {key}"
        assert sampler["boundary"] == -1.0 and sampler["switch_step"] == -1  # the model's official boundary
    latent = [n for n in api.values() if {"width", "height", "length"} <= set(n["inputs"])]
    assert [tuple(n["inputs"][k] for k in ("width", "height", "length")) for n in latent] == [want["size"]] * \
        SIZED.get(name, 1)
    videos = _by_class(api, "CreateVideo") + _by_class(api, DISK_SAVE)  # the disk route saves without CreateVideo
    assert [v["fps"] for v in videos] == [want["fps"]]
    assert [v["vae_name"] for v in _by_class(api, "Wan22DuoVAELoader")] == [want["vae"]]
    texts = {n["inputs"]["text"] for n in api.values() if n["class_type"] == "CLIPTextEncode"}
    assert OFFICIAL_NEGATIVE in texts and len(texts) == 2
    assert [c["type"] for c in _by_class(api, "CLIPLoader")] == ["wan"]
    assert len(_by_class(api, "SaveVideo")) + len(_by_class(api, DISK_SAVE)) == 1
    experts = _by_class(api, "Wan22DuoExpertLoader")
    if name.startswith("ti2v"):
        assert experts == [] and "low_noise_model" not in sampler
        assert _by_class(api, "Wan22DuoTI2VLoader")[0]["unet_name"] == "wan2.2_ti2v_5B_fp16.safetensors"
    else:
        assert sorted(e["role"] for e in experts) == ["high_noise", "low_noise"]
    assert len(_by_class(api, "LoadImage")) == IMAGES.get(name, 0)


def _upstream_model(api, link):
    """(expert loader inputs, [LoRA inputs on the way]) feeding a model input."""
    loras = []
    node = api[link[0]]
    while node["class_type"] == "Wan22DuoLoraLoader":
        loras.append(node["inputs"])
        node = api[node["inputs"]["model"][0]]
    return node["inputs"], loras


def test_lightning_puts_each_lora_on_its_own_expert():
    api = load(API_DIR / "t2v_a14b_lightning.json")
    (sampler,) = _by_class(api, "Wan22DuoSampler")
    for slot, role in (("high_noise_model", "high_noise"), ("low_noise_model", "low_noise")):
        expert, loras = _upstream_model(api, sampler[slot])
        assert expert["role"] == role and role in expert["unet_name"]
        assert [(lo["lora_name"], lo["strength"]) for lo in loras] == [
            (f"wan2.2_t2v_lightx2v_4steps_lora_v1.1_{role}.safetensors", 1.0)]
    for name in ("t2v_a14b", "i2v_a14b"):
        plain = load(API_DIR / f"{name}.json")
        (s,) = _by_class(plain, "Wan22DuoSampler")
        assert _upstream_model(plain, s["high_noise_model"])[1] == []


# ---------------------------------------------------------------- generated, and from the reference


def test_committed_files_match_the_generator():
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_workflows

    stale = [str(p.relative_to(ROOT)) for p, text in build_workflows.render().items()
             if not p.exists() or p.read_text(encoding="utf-8") != text]
    assert stale == [], f"run python scripts/build_workflows.py: {stale} are out of date"


def _laid_out():
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_workflows

    return build_workflows.laid_out()


def test_layout_covers_no_node_title_or_widget():
    """No node (title bar and badges included) over another, no group title under a node, at the frontend's sizes."""
    import workflow_layout

    workflows = _laid_out()
    assert len(workflows) == len(NAMES)
    sizes = workflow_layout.load_sizes()
    for w in workflows:
        assert workflow_layout.layout_problems(w) == []
        for node in w.nodes:  # every node at least as large as the frontend renders it, in either mode
            key = f"{w.name}#{node.id}" if node.type == "MarkdownNote" else node.type
            assert key in sizes, f"{w.name}: no measured size for {key}; run integration/browser.py --measure"
            assert node.size[0] >= sizes[key][0] and node.size[1] >= sizes[key][1], (w.name, node.id, node.size)


def test_layout_check_sees_the_old_stacking():
    """The expert loaders 200 units apart, as saved before, are reported: the check can fail."""
    import workflow_layout
    from build_workflows import Node, Workflow

    w = Workflow("old")
    w.add(Node(10, "Wan22DuoExpertLoader", (40, 60), (340, 233)))
    w.add(Node(11, "Wan22DuoExpertLoader", (40, 260), (340, 233)))
    w.add(Node(20, "CLIPLoader", (40, 520), (340, 120)))  # clear of 11, but under the next group's title
    w.groups += [("Models", [10, 11]), ("Text", [20])]
    problems = workflow_layout.layout_problems(w)
    assert any("node 10" in p and "node 11" in p for p in problems), problems
    assert any("title of group 'Text'" in p and "node 11" in p for p in problems), problems


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_first_view_opens_near_one_to_one_on_the_notes(path):
    """Note text is 10 px at 1:1 in the frontend; the saved view keeps it at 9.5 px or more, notes at the top left."""
    import workflow_layout

    ui = load(path)
    ds = ui["extra"]["ds"]
    assert workflow_layout.MIN_SCALE <= ds["scale"] <= workflow_layout.MAX_SCALE
    note = min((n for n in ui["nodes"] if n["type"] == "MarkdownNote"), key=lambda n: n["id"])
    left = (note["pos"][0] + ds["offset"][0]) * ds["scale"]
    top = (note["pos"][1] - workflow_layout.TITLE_H + ds["offset"][1]) * ds["scale"]
    assert workflow_layout.VIEW_LEFT - 1 <= left <= workflow_layout.VIEW_LEFT + 1
    assert workflow_layout.VIEW_TOP - 1 <= top <= workflow_layout.VIEW_TOP + workflow_layout.CONTROLS_H


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_every_template_has_its_thumbnail(path):
    """The frontend asks for <name>.jpg beside each template and logs a 404 per missing one."""
    from PIL import Image

    picture = path.with_suffix(".jpg")
    assert picture.is_file(), f"{picture.name} is missing: run python scripts/build_workflows.py"
    with Image.open(picture) as image:
        assert image.format == "JPEG" and image.size == (512, 512)
        image.load()


def test_template_cards_name_every_workflow_in_order():
    """The card titles (file names): Wan 2.2, the basic T2V first, numbered 01.. in CARDS order, no bad characters."""
    assert template_cards.problems() == []
    assert sorted(c.name for c in template_cards.CARDS) == sorted(NAMES)
    stems = [template_cards.file_stem(c.name) for c in template_cards.CARDS]
    assert stems[0] == "01 Wan 2.2 T2V-A14B text to video"
    assert stems == sorted(stems), "the number prefix must sort the cards in CARDS order"
    assert [s[:3] for s in stems] == [f"{i:02d} " for i in range(1, len(stems) + 1)]
    assert sorted(p.stem for p in UI_FILES) == sorted(stems)
    assert sorted(p.stem for p in UI_DIR.glob("*.jpg")) == sorted(stems)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for c, stem in zip(template_cards.CARDS, stems):  # the README's table of cards
        assert f"| `{stem}` | `{c.name}` |" in readme, stem


def test_template_card_checks_can_fail(monkeypatch):
    bad = template_cards.Card("x", "T2V: 100% done" + " long" * 8, "")
    monkeypatch.setattr(template_cards, "CARDS", template_cards.CARDS + (bad, template_cards.CARDS[0]))
    found = "\n".join(template_cards.problems())
    for expected in ("name 't2v_a14b' used twice", "refuses", "characters; a card shows", "does not say Wan 2.2"):
        assert expected in found, found
    with pytest.raises(KeyError, match="no template card"):
        template_cards.file_stem("t2v_unknown")


def test_core_subset_is_copied_from_the_reference():
    # The committed digests of ComfyUI 0.3.76's /object_info stand in for the full dump (760 kB, kept outside the
    # repository), so a hand edit of the subset fails here on any machine.
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_workflows

    digests = load(build_workflows.NODE_DIGESTS)
    assert len(digests) > 400 and set(build_workflows.CORE_NODES) == set(CORE)
    assert {name: build_workflows.schema_digest(CORE[name]) for name in CORE} == {name: digests[name] for name in CORE}
    if FULL_REFERENCE.exists():  # where the dump is at hand (this project's machines): the digests are its own
        full = load(FULL_REFERENCE)
        assert CORE == {name: full[name] for name in CORE}
        assert digests == build_workflows.node_digests(full)


@pytest.mark.parametrize("name", ["ti2v_5b_t2v", "ti2v_5b_i2v", "ti2v_5b_first_last"])
def test_ti2v_workflows_name_no_experts(name):
    # TI2V-5B is one model: no node of its workflows may be titled as if it ran two experts.
    api_titles = [node["_meta"]["title"] for node in load(API_DIR / f"{name}.json").values()]
    ui_titles = [node.get("title") or NODE_DISPLAY_NAME_MAPPINGS.get(node["type"], node["type"])
                 for node in load(ui_file(name))["nodes"]]
    assert "Wan 2.2 Duo Sampler" in api_titles and "Wan 2.2 Duo Sampler" in ui_titles
    assert not [t for t in api_titles + ui_titles if "expert" in t.lower()]


# ---------------------------------------------------------------- ComfyUI loaders + Wan22DuoModelSampler


NATIVE_OFFICIAL = {
    "t2v_a14b_native": ("t2v_a14b", "UNETLoader", "EmptyHunyuanLatentVideo"),
    "i2v_a14b_native": ("i2v_a14b", "UNETLoader", "WanImageToVideo"),
    "ti2v_5b_native": ("ti2v_5b_t2v", "UNETLoader", "Wan22ImageToVideoLatent"),
    "t2v_a14b_gguf": ("t2v_a14b", "UnetLoaderGGUF", "EmptyHunyuanLatentVideo"),
}


@pytest.mark.parametrize("name", NATIVE)
def test_native_workflows_official_settings_and_graph(name):
    api = load(API_DIR / f"{name}.json")
    official, loader, latent_node = NATIVE_OFFICIAL[name]
    want = OFFICIAL[official]
    assert _by_class(api, "Wan22DuoSampler") == [] and _by_class(api, "Wan22DuoVAELoader") == []
    (sampler,) = _by_class(api, "Wan22DuoModelSampler")
    for key in ("steps", "cfg_high", "cfg_low", "shift", "sampler", "scheduler"):
        if key in want:
            assert sampler[key] == want[key], f"{name}: {key}"
    assert sampler["boundary"] == -1.0 and sampler["switch_step"] == -1
    (latent,) = _by_class(api, latent_node)
    assert (latent["width"], latent["height"], latent["length"]) == want["size"]
    assert [v["vae_name"] for v in _by_class(api, "VAELoader")] == [want["vae"]]
    assert [v["fps"] for v in _by_class(api, "CreateVideo")] == [want["fps"]]
    assert len(_by_class(api, "VAEDecode")) == 1 and len(_by_class(api, "SaveVideo")) == 1
    texts = {n["inputs"]["text"] for n in api.values() if n["class_type"] == "CLIPTextEncode"}
    assert OFFICIAL_NEGATIVE in texts and len(texts) == 2
    loaders = _by_class(api, loader)
    slots = ["high_noise_model"] + ([] if name.startswith("ti2v") else ["low_noise_model"])
    assert sorted(slots) == sorted(k for k in sampler if k.endswith("_model"))
    for slot in slots:  # each expert straight from its loader, high-noise file on high_noise_model
        source = api[sampler[slot][0]]
        assert source["class_type"] == loader
        if slot != "high_noise_model" or not name.startswith("ti2v"):
            role = "high" if slot.startswith("high") else "low"
            assert role in source["inputs"]["unet_name"].lower()
    assert len(loaders) == len(slots)
    if name == "t2v_a14b_gguf":
        assert [m["unet_name"] for m in loaders] == ["Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf",
                                                     "Wan2.2-T2V-A14B-LowNoise-Q4_K_M.gguf"]
    assert len(_by_class(api, "LoadImage")) == (1 if name == "i2v_a14b_native" else 0)


# ---------------------------------------------------------------- keyframe and continuation workflows (issue 14)


def _node(api, link):
    return api[link[0]]


@pytest.mark.parametrize("name, node_type", [("i2v_a14b_first_last", "Wan22DuoI2VKeyframes"),
                                             ("ti2v_5b_first_last", "Wan22DuoTI2VKeyframes")])
def test_first_last_workflows_feed_two_images_to_the_keyframe_node(name, node_type):
    api = load(API_DIR / f"{name}.json")
    (sampler,) = _by_class(api, "Wan22DuoSampler")
    (keyframes,) = _by_class(api, node_type)
    start, end = _node(api, keyframes["start_image"]), _node(api, keyframes["end_image"])
    assert start["class_type"] == end["class_type"] == "LoadImage"
    assert keyframes["start_image"] != keyframes["end_image"]
    # Two different pictures, the ones the pack draws into ComfyUI's input folder (nodes/example_images.py).
    assert (start["inputs"]["image"], end["inputs"]["image"]) == (example_images.FIRST_FRAME, example_images.LAST_FRAME)
    assert api[sampler["latent"][0]]["class_type"] == node_type
    if node_type == "Wan22DuoI2VKeyframes":
        assert api[sampler["positive"][0]]["class_type"] == api[sampler["negative"][0]]["class_type"] == node_type
        assert keyframes["vae"] == _by_class_ids(api, "Wan22DuoVAELoader")


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_workflows_start_from_the_packs_first_frame(name):
    # Not ComfyUI's example.png: 0.33.0 ships none, and first and last frame would show the same picture.
    images = [n["inputs"]["image"] for n in load(API_DIR / f"{name}.json").values() if n["class_type"] == "LoadImage"]
    assert images[0] == example_images.FIRST_FRAME
    assert set(images) <= {example_images.FIRST_FRAME, example_images.LAST_FRAME}


def _by_class_ids(api, class_type):
    (node_id,) = [k for k, n in api.items() if n["class_type"] == class_type]
    return [node_id, 0]


def test_extend_workflow_joins_the_second_clip_to_the_first():
    api = load(API_DIR / "i2v_a14b_extend.json")
    (extend,) = _by_class(api, "Wan22DuoI2VExtend")
    (join,) = _by_class(api, "Wan22DuoJoinClips")
    assert extend["overlap"] == 5 and extend["length"] == 81
    # the join takes the overlap from the extend node (its "overlap" output), so the two cannot disagree
    extend_id = next(k for k, n in api.items() if n["class_type"] == "Wan22DuoI2VExtend")
    assert join["overlap"] == [extend_id, 3]
    first_decode, second_decode = _node(api, join["first"]), _node(api, join["second"])
    assert join["first"] == extend["previous_images"]  # clip 1's frames feed both the extension and the join
    samplers = {k: n["inputs"] for k, n in api.items() if n["class_type"] == "Wan22DuoSampler"}
    first_sampler, second_sampler = (samplers[d["inputs"]["samples"][0]] for d in (first_decode, second_decode))
    assert api[first_sampler["latent"][0]]["class_type"] == "Wan22DuoI2VConditioning"
    assert {api[second_sampler[k][0]]["class_type"] for k in ("positive", "negative", "latent")} == {
        "Wan22DuoI2VExtend"}
    assert first_sampler["high_noise_model"] == second_sampler["high_noise_model"]
    assert first_sampler["low_noise_model"] == second_sampler["low_noise_model"]
    (video,) = _by_class(api, "CreateVideo")
    assert _node(api, video["images"])["class_type"] == "Wan22DuoJoinClips"


def test_svi_workflow_chains_the_latent_and_joins_without_the_anchor_and_motion_frames():
    api = load(API_DIR / "i2v_a14b_svi.json")
    ids = {k for k, n in api.items() if n["class_type"] == "Wan22DuoI2VExtendSVI"}
    first_id = next(k for k in ids if "previous_latent" not in api[k]["inputs"])
    (second_id,) = ids - {first_id}
    first, second = api[first_id]["inputs"], api[second_id]["inputs"]
    assert first["anchor_image"] == second["anchor_image"] and first["motion_latents"] == 1
    samplers = {k: n["inputs"] for k, n in api.items() if n["class_type"] == "Wan22DuoSampler"}
    by_clip = {s["latent"][0]: k for k, s in samplers.items()}
    assert second["previous_latent"] == [by_clip[first_id], 0]  # clip 1's LATENT, not its decoded frames
    for sampler in samplers.values():
        for slot, role in (("high_noise_model", "high_noise"), ("low_noise_model", "low_noise")):
            expert, loras = _upstream_model(api, sampler[slot])
            assert expert["role"] == role and [(lo["lora_name"], lo["strength"]) for lo in loras] == [
                (f"SVI_Wan2.2-I2V-A14B_{role}_lora_v2.0_pro.safetensors", 1.0)]
    (join,) = _by_class(api, "Wan22DuoJoinClips")
    (match,) = _by_class(api, "Wan22DuoColorMatch")
    assert join["overlap"] == [second_id, 3] == match["overlap"]
    assert _node(api, join["second"])["class_type"] == "Wan22DuoColorMatch" and match["reference"] == join["first"]
    decoded = {_node(api, match["images"])["inputs"]["samples"][0], _node(api, join["first"])["inputs"]["samples"][0]}
    assert decoded == {by_clip[first_id], by_clip[second_id]}


def test_disk_workflow_decodes_every_clip_to_disk_appending_without_the_repeated_frames():
    api = load(API_DIR / "i2v_a14b_svi_disk.json")
    svi = {k: n["inputs"] for k, n in api.items() if n["class_type"] == "Wan22DuoI2VExtendSVI"}
    samplers = {k: n["inputs"] for k, n in api.items() if n["class_type"] == "Wan22DuoSampler"}
    clip_of_sampler = {k: s["latent"][0] for k, s in samplers.items()}
    decodes = {k: n["inputs"] for k, n in api.items() if n["class_type"] == DISK_DECODE}
    assert not _by_class(api, "Wan22DuoVAEDecode") and not _by_class(api, "Wan22DuoJoinClips")
    (save,) = _by_class(api, DISK_SAVE)
    chain, node = [], save["frames"][0]  # walk back from the save node through previous_frames
    while node is not None:
        chain.insert(0, node)
        node = decodes[node].get("previous_frames", [None])[0]
    assert sorted(chain) == sorted(decodes) and len(chain) == 3
    previous_latent = None
    for n, decode_id in enumerate(chain):
        decode = decodes[decode_id]
        clip = clip_of_sampler[decode["samples"][0]]
        assert svi[clip].get("previous_latent") == previous_latent  # each clip continues the previous LATENT
        previous_latent = [decode["samples"][0], 0]
        if n == 0:
            assert decode["overlap"] == 0 and decode["colour_match"] == "off"
        else:  # the SVI node's overlap output (1 + 4k): the anchor's frame and the repeated motion frames
            assert decode["overlap"] == [clip, 3] and decode["colour_match"] == "anchor"
            assert decode["anchor_image"] == svi[clip]["anchor_image"]


def test_check_never_writes_and_a_bad_core_reference_is_one_line(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_workflows

    # The committed core files, copied: the check must leave both copies as they are.
    for name in ("CORE_SCHEMA", "NODE_DIGESTS"):
        copy = tmp_path / getattr(build_workflows, name).name
        copy.write_bytes(getattr(build_workflows, name).read_bytes())
        monkeypatch.setattr(build_workflows, name, copy)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    changed = {**CORE, "ExtraNode": {"input": {}}}  # one more node: the digests differ, the subset not
    reference = tmp_path / "object_info.json"
    reference.write_text(json.dumps(changed))
    written = []
    monkeypatch.setattr(build_workflows, "update", _no_write(build_workflows.update, written))
    assert build_workflows.main(["--check", "--core-reference", str(reference)]) == 1
    assert "out of date: " in capsys.readouterr().out and written == [False, False]
    assert {p: p.read_bytes() for p in before} == before
    bad = {"gone.json": None, "text.json": b"not json", "list.json": b"[1]", "latin.json": b"\xff{}",
           "partial.json": json.dumps({"KSampler": {}}).encode()}
    said = {"gone.json": "cannot read it", "text.json": "is not valid JSON", "list.json": "holds a JSON list",
            "latin.json": "is not UTF-8", "partial.json": "has no entry for"}
    for name, content in bad.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(SystemExit) as info:
            build_workflows.main(["--check", "--core-reference", str(path)])
        message = str(info.value)
        assert message.startswith(f"error: --core-reference {path}") and said[name] in message, message
        assert "\n" not in message


def _no_write(update, calls):
    """``build_workflows.update`` that records its ``write`` flag and never writes."""
    def wrapped(files, write):
        calls.append(write)
        return update(files, write=False)
    return wrapped


def test_three_stage_lightning_runs_the_base_expert_first_then_the_lightning_experts():
    api = load(API_DIR / "t2v_a14b_lightning_3stage.json")
    sampler = next(n for n in api.values() if n["class_type"] == "Wan22DuoSampler")
    phase = api[sampler["inputs"]["lead_phases"][0]]
    assert phase["class_type"] == "Wan22DuoPhase"
    assert (phase["inputs"]["cfg"], phase["inputs"]["steps"]) == (3.5, 2)
    base = api[phase["inputs"]["model"][0]]
    assert base["class_type"] == "Wan22DuoExpertLoader" and "high_noise" in base["inputs"]["unet_name"]
    for slot, role in (("high_noise_model", "high_noise"), ("low_noise_model", "low_noise")):
        lora = api[sampler["inputs"][slot][0]]
        assert lora["class_type"] == "Wan22DuoLoraLoader" and f"lightx2v_4steps_lora_v1.1_{role}" in lora["inputs"][
            "lora_name"]
        assert role in api[lora["inputs"]["model"][0]]["inputs"]["unet_name"]
    s = sampler["inputs"]
    assert (s["steps"], s["cfg_high"], s["cfg_low"], s["shift"], s["sampler"], s["scheduler"], s["switch_step"]) == (
        8, 1.0, 1.0, 5.0, "euler", "simple", -1)


def test_long_video_samples_in_81_frame_context_windows():
    api = load(API_DIR / "t2v_a14b_long_windows.json")
    sampler = next(n for n in api.values() if n["class_type"] == "Wan22DuoSampler")
    windows = api[sampler["inputs"]["context_windows"][0]]
    assert windows["class_type"] == "Wan22DuoContextWindows"
    assert windows["inputs"] == {"context_length": 81, "context_overlap": 32, "schedule": "uniform",
                                 "fuse": "pyramid", "causal_anchor": True, "freenoise": True,
                                 "retain_first_frame": False}
    latent = api[sampler["inputs"]["latent"][0]]["inputs"]
    assert latent["length"] > windows["inputs"]["context_length"]  # longer than one window, so windows act
