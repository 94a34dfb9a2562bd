"""Test-only ComfyUI nodes for the integration suite; installed into the copied ComfyUI, never shipped.

``CLIPLoader(type="wan")`` builds the full umT5-XXL (5.7B parameters) whatever file it is given, so no
small text encoder exists. ``Wan22DuoTestConditioning`` stands in for CLIPLoader + CLIPTextEncode: it
returns a CONDITIONING shaped as ComfyUI's umT5 returns one, ``[1, length, 4096]`` with the rows past
the prompt's tokens zero. The rows are seeded from the text (crc32), so a prompt always gives the same
context and two prompts differ.
"""
import zlib

import torch

TEXT_DIM = 4096


def text_context(text: str, length: int) -> torch.Tensor:
    tokens = max(1, min(length, len(text.split()) + 1))  # +1: the end-of-text token
    generator = torch.Generator().manual_seed(zlib.crc32(text.encode("utf-8")))
    context = torch.zeros(1, length, TEXT_DIM)
    context[0, :tokens] = 0.5 * torch.randn(tokens, TEXT_DIM, generator=generator)
    return context


class Wan22DuoTestConditioning:
    CATEGORY = "Wan22Duo/testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "default": ""}),
                             "length": ("INT", {"default": 32, "min": 1, "max": 512})}}

    def encode(self, text: str, length: int = 32):
        return ([[text_context(text, length), {}]],)


NODE_CLASS_MAPPINGS = {"Wan22DuoTestConditioning": Wan22DuoTestConditioning}
