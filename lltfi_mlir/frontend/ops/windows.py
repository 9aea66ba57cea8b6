"""Padding and output-size rules shared by Conv and the pooling operators (ONNX auto_pad)."""

from __future__ import annotations

import math


def explicit_pads(attrs: dict, in_spatial: tuple[int, ...], kernel: list[int], strides: list[int],
                  dilations: list[int]) -> tuple[list[int], list[int]]:
    """(low, high) pads per spatial dim after resolving auto_pad."""
    rank = len(in_spatial)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0] * (2 * rank)))
        return pads[:rank], pads[rank:]
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    low, high = [], []
    for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        if auto_pad == "SAME_UPPER":
            low.append(small), high.append(large)
        else:
            low.append(large), high.append(small)
    return low, high


def explicit_auto_pad(attrs: dict) -> bool:
    """True when the pads are the `pads` attribute (auto_pad NOTSET), not derived from auto_pad."""
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    return (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) in ("NOTSET", "")


def window_attrs(attrs: dict, rank: int, kernel: list[int]) -> tuple[list[int], list[int]]:
    strides = list(attrs.get("strides", [1] * rank))
    dilations = list(attrs.get("dilations", [1] * rank))
    return strides, dilations


def extra_high(in_padded: tuple[int, ...], out_spatial: tuple[int, ...], kernel: list[int],
               strides: list[int], dilations: list[int]) -> list[int]:
    """Padding beyond the explicit pads that ceil_mode windows reach (never negative)."""
    return [max(0, (o - 1) * s + (k - 1) * d + 1 - p)
            for p, o, k, s, d in zip(in_padded, out_spatial, kernel, strides, dilations)]
