"""RandAugment and AutoAugment (policy v0) with the official semantics (google/automl
``efficientnetv2/autoaugment.py``), drawing every random choice from a numpy generator.

Magnitudes are on the official level scale: an op's argument is ``level / 10`` of its range
(``_MAX_LEVEL = 10``); levels above 10 extrapolate (rotate 30 degrees at 10, 45 at 15) and
fractional levels are kept (progressive learning ramps them through ``np.linspace``). In
RandAugment each of the ``layers`` picks one of 16 ops uniformly and always applies it; rotate,
shear and translate take a random sign. AutoAugment v0 picks one of 25 sub-policies and applies
each of its two ops with the op's probability.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from effv2.data import image_ops as ops

MAX_LEVEL = 10.0

RANDAUGMENT_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd",
)  # fmt: skip
SIGNED_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")

# (translate_const, cutout_const) in pixels at level 10
RANDAUGMENT_CONSTANTS = (100, 40)
AUTOAUGMENT_CONSTANTS = (250, 100)

POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)


def _enhance(level: float) -> float:
    return level / MAX_LEVEL * 1.8 + 0.1


def apply_op(
    image: np.ndarray,
    name: str,
    level: float,
    negate: bool = False,
    constants: tuple[int, int] = RANDAUGMENT_CONSTANTS,
    center: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Op ``name`` at ``level`` (official scale) on a uint8 HWC image; ``negate`` flips the sign
    of rotate / shear / translate, ``center`` places Cutout."""
    translate_const, cutout_const = constants
    sign = -1.0 if negate else 1.0
    table: dict[str, Callable[[], np.ndarray]] = {
        "AutoContrast": lambda: ops.autocontrast(image),
        "Equalize": lambda: ops.equalize(image),
        "Invert": lambda: ops.invert(image),
        "Rotate": lambda: ops.rotate(image, sign * level / MAX_LEVEL * 30.0),
        "Posterize": lambda: ops.posterize(image, int(level / MAX_LEVEL * 4)),
        "Solarize": lambda: ops.solarize(image, int(level / MAX_LEVEL * 256)),
        "SolarizeAdd": lambda: ops.solarize_add(image, int(level / MAX_LEVEL * 110)),
        "Color": lambda: ops.color(image, _enhance(level)),
        "Contrast": lambda: ops.contrast(image, _enhance(level)),
        "Brightness": lambda: ops.brightness(image, _enhance(level)),
        "Sharpness": lambda: ops.sharpness(image, _enhance(level)),
        "ShearX": lambda: ops.shear_x(image, sign * level / MAX_LEVEL * 0.3),
        "ShearY": lambda: ops.shear_y(image, sign * level / MAX_LEVEL * 0.3),
        "TranslateX": lambda: ops.translate_x(image, sign * level / MAX_LEVEL * float(translate_const)),
        "TranslateY": lambda: ops.translate_y(image, sign * level / MAX_LEVEL * float(translate_const)),
        "Cutout": lambda: ops.cutout(image, int(level / MAX_LEVEL * cutout_const), center),
    }
    return table[name]()


def _random_center(rng: np.random.Generator, image: np.ndarray) -> tuple[int, int]:
    return int(rng.integers(image.shape[0])), int(rng.integers(image.shape[1]))


def randaugment(image: np.ndarray, layers: int, magnitude: float, rng: np.random.Generator) -> np.ndarray:
    for _ in range(layers):
        name = RANDAUGMENT_OPS[int(rng.integers(len(RANDAUGMENT_OPS)))]
        negate = bool(rng.random() < 0.5) if name in SIGNED_OPS else False
        center = _random_center(rng, image) if name == "Cutout" else (0, 0)
        image = apply_op(image, name, float(magnitude), negate, RANDAUGMENT_CONSTANTS, center)
    return image


def autoaugment_v0(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    for name, probability, level in POLICY_V0[int(rng.integers(len(POLICY_V0)))]:
        if rng.random() < probability:
            negate = bool(rng.random() < 0.5) if name in SIGNED_OPS else False
            center = _random_center(rng, image) if name == "Cutout" else (0, 0)
            image = apply_op(image, name, float(level), negate, AUTOAUGMENT_CONSTANTS, center)
    return image
