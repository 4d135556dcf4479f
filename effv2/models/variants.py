"""The official EfficientNetV2 block definitions (google/automl efficientnetv2, SPEC section 2),
and a micro network for smoke runs.

Each stage is written in the official string notation, e.g. ``r4_k3_s2_e4_i24_o48_c1``:
repeats, kernel, stride, expansion, input and output channels, ``c1`` for Fused-MBConv and
``se0.25`` for the squeeze-excite ratio of an MBConv stage.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    fused: bool
    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int
    se_ratio: float

    @classmethod
    def parse(cls, text: str) -> StageSpec:
        fields = dict(re.fullmatch(r"([a-z]+)([\d.]+)", part).groups() for part in text.split("_"))
        return cls(
            fused=fields.get("c", "0") == "1",
            repeats=int(fields["r"]),
            kernel=int(fields["k"]),
            stride=int(fields["s"]),
            expand_ratio=int(fields["e"]),
            in_channels=int(fields["i"]),
            out_channels=int(fields["o"]),
            se_ratio=float(fields.get("se", 0.0)),
        )


@dataclass(frozen=True)
class VariantSpec:
    """One EfficientNetV2 variant: its stages, multipliers and head dropout. The official train
    and eval sizes live in conf/model/<variant>.yaml, where the data sizes read them."""

    name: str
    stages: tuple[StageSpec, ...]
    width: float
    depth: float
    dropout: float
    head_channels: int = 1280
    divisor: int = 8

    def round_channels(self, channels: int) -> int:
        """Scale by the width multiplier and round to the nearest multiple of 8 (at least 8).

        This is google/automl's EfficientNetV2 ``round_filters``: unlike EfficientNet-V1 it has no
        "never below 90 %" correction. That correction would turn B3's first stage into 24
        channels instead of the released checkpoints' 16 (timm's V2 ports use round_limit=0 too).
        """
        if self.width == 1.0:
            return channels
        scaled = channels * self.width
        return int(max(self.divisor, int(scaled + self.divisor / 2) // self.divisor * self.divisor))

    def round_repeats(self, repeats: int) -> int:
        return int(math.ceil(self.depth * repeats))

    @property
    def stem_channels(self) -> int:
        return self.round_channels(self.stages[0].in_channels)


def _stages(*texts: str) -> tuple[StageSpec, ...]:
    return tuple(StageSpec.parse(t) for t in texts)


_S = _stages(
    "r2_k3_s1_e1_i24_o24_c1",
    "r4_k3_s2_e4_i24_o48_c1",
    "r4_k3_s2_e4_i48_o64_c1",
    "r6_k3_s2_e4_i64_o128_se0.25",
    "r9_k3_s1_e6_i128_o160_se0.25",
    "r15_k3_s2_e6_i160_o256_se0.25",
)
_M = _stages(
    "r3_k3_s1_e1_i24_o24_c1",
    "r5_k3_s2_e4_i24_o48_c1",
    "r5_k3_s2_e4_i48_o80_c1",
    "r7_k3_s2_e4_i80_o160_se0.25",
    "r14_k3_s1_e6_i160_o176_se0.25",
    "r18_k3_s2_e6_i176_o304_se0.25",
    "r5_k3_s1_e6_i304_o512_se0.25",
)
_L = _stages(
    "r4_k3_s1_e1_i32_o32_c1",
    "r7_k3_s2_e4_i32_o64_c1",
    "r7_k3_s2_e4_i64_o96_c1",
    "r10_k3_s2_e4_i96_o192_se0.25",
    "r19_k3_s1_e6_i192_o224_se0.25",
    "r25_k3_s2_e6_i224_o384_se0.25",
    "r7_k3_s1_e6_i384_o640_se0.25",
)
_XL = _stages(
    "r4_k3_s1_e1_i32_o32_c1",
    "r8_k3_s2_e4_i32_o64_c1",
    "r8_k3_s2_e4_i64_o96_c1",
    "r16_k3_s2_e4_i96_o192_se0.25",
    "r24_k3_s1_e6_i192_o256_se0.25",
    "r32_k3_s2_e6_i256_o512_se0.25",
    "r8_k3_s1_e6_i512_o640_se0.25",
)
_BASE = _stages(
    "r1_k3_s1_e1_i32_o16_c1",
    "r2_k3_s2_e4_i16_o32_c1",
    "r2_k3_s2_e4_i32_o48_c1",
    "r3_k3_s2_e4_i48_o96_se0.25",
    "r5_k3_s1_e6_i96_o112_se0.25",
    "r8_k3_s2_e6_i112_o192_se0.25",
)

VARIANTS: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        VariantSpec("effnetv2_s", _S, 1.0, 1.0, 0.2),
        VariantSpec("effnetv2_m", _M, 1.0, 1.0, 0.3),
        VariantSpec("effnetv2_l", _L, 1.0, 1.0, 0.4),
        VariantSpec("effnetv2_xl", _XL, 1.0, 1.0, 0.4),
        VariantSpec("effnetv2_b0", _BASE, 1.0, 1.0, 0.2),
        VariantSpec("effnetv2_b1", _BASE, 1.0, 1.1, 0.2),
        VariantSpec("effnetv2_b2", _BASE, 1.1, 1.2, 0.3),
        VariantSpec("effnetv2_b3", _BASE, 1.2, 1.4, 0.3),
    )
}


# Not an official variant: every block kind (Fused-MBConv with expansion 1 and a skip, Fused-
# MBConv, MBConv with squeeze-excite and a skip) in ~60k parameters. It compiles in seconds
# instead of B0's half minute, for smoke runs of a configuration and for the test suite.
MICRO = VariantSpec(
    "effnetv2_micro",
    _stages("r1_k3_s1_e1_i16_o16_c1", "r2_k3_s2_e4_i16_o24_c1", "r2_k3_s2_e4_i24_o32_se0.25"),
    1.0, 1.0, 0.2, head_channels=64,
)  # fmt: skip


def drop_rate_of(spec: VariantSpec, drop_rate: float | None) -> float:
    """The head dropout rate: ``drop_rate``, or where it is None the variant's own (the official
    per-variant value). The one place this default is decided."""
    return spec.dropout if drop_rate is None else float(drop_rate)


def resolved_drop_rate(model_cfg: object) -> float:
    """The head dropout a ``model`` config trains with (model.drop_rate null: the variant's own)."""
    return drop_rate_of(get_variant(model_cfg.name), model_cfg.drop_rate)  # type: ignore[attr-defined]


def get_variant(name: str) -> VariantSpec:
    if name == MICRO.name:
        return MICRO
    try:
        return VARIANTS[name]
    except KeyError:
        accepted = ", ".join([*VARIANTS, MICRO.name])
        raise ValueError(f"unknown model variant {name!r}; accepted: {accepted}") from None
