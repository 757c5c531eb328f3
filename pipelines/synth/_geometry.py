"""Figure skeleton, body parts and garment parts as polygons in segment-local frames.

A *frame* is a 3x3 affine matrix mapping segment-local coordinates (u, v, 1) to figure
units (the figure is 1 unit tall, head top at y=0, soles at y=1, x centred). Every body
and garment part is a polygon in the local frame of one segment (torso, upper arm, ...),
so the same garment polygon follows any pose. The texture of a garment is evaluated in the
*flat pose* (a fixed canonical body and pose): a pixel maps back to segment-local
coordinates through its pose frame, then forward through the flat frame, so a product looks
the same on its shop shot and on any figure apart from pose, scale and lighting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Frames = dict[str, np.ndarray]

# Canonical segment lengths (figure units).
_HEAD_C = (0.0, 0.068)
_HEAD_R = 0.062
_NECK_Y = 0.165
_TORSO_LEN = 0.305
_UARM, _LARM = 0.165, 0.15
_ULEG, _LLEG = 0.245, 0.245
_FOOT_U = 0.03


@dataclass(frozen=True)
class BodyShape:
    """Body proportions and colours of one figure."""

    bw: float = 1.0  # shoulder / limb width factor
    hipf: float = 1.0  # hip width factor
    skin: tuple[int, int, int] = (224, 180, 150)
    hair: tuple[int, int, int] = (60, 40, 25)
    hair_style: str = "short"  # short | long | bun | bald


@dataclass(frozen=True)
class Pose:
    """Limb angles in radians; arm/leg angles are measured from straight down, outward +."""

    arm_l: float = 0.15
    arm_r: float = 0.15
    bend_l: float = 0.0
    bend_r: float = 0.0
    leg_l: float = 0.05
    leg_r: float = 0.05
    knee_l: float = 0.0
    knee_r: float = 0.0


#: the pose of a garment laid flat for its product shot (and for texture coordinates).
FLAT_POSE = Pose(arm_l=0.5, arm_r=0.5, leg_l=0.1, leg_r=0.1)


def _frame(origin: tuple[float, float], xaxis: tuple[float, float], yaxis: tuple[float, float]) -> np.ndarray:
    return np.array(
        [[xaxis[0], yaxis[0], origin[0]], [xaxis[1], yaxis[1], origin[1]], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


def _limb(
    origin: tuple[float, float], angle: float, side: int, length: float, hw: float
) -> tuple[np.ndarray, tuple[float, float]]:
    d = (side * math.sin(angle), math.cos(angle))
    perp = (side * d[1], -side * d[0])
    f = _frame(origin, (perp[0] * hw, perp[1] * hw), (d[0] * length, d[1] * length))
    end = (origin[0] + d[0] * length, origin[1] + d[1] * length)
    return f, end


def skeleton(shape: BodyShape, pose: Pose) -> tuple[Frames, dict[str, float]]:
    """Segment frames of a figure and the width/length aspect of each limb (for round caps)."""
    fr: Frames = {}
    aspect: dict[str, float] = {}
    bw, hf = shape.bw, shape.hipf
    fr["head"] = _frame(_HEAD_C, (_HEAD_R, 0.0), (0.0, _HEAD_R))
    fr["torso"] = _frame((0.0, _NECK_Y), (0.105 * bw, 0.0), (0.0, _TORSO_LEN))
    for name, side in (("l", -1), ("r", 1)):
        arm = pose.arm_l if side < 0 else pose.arm_r
        bend = pose.bend_l if side < 0 else pose.bend_r
        leg = pose.leg_l if side < 0 else pose.leg_r
        knee = pose.knee_l if side < 0 else pose.knee_r
        uhw, lhw = 0.027 * bw, 0.022 * bw
        fr[f"uarm_{name}"], elbow = _limb((side * 0.09 * bw, 0.19), arm, side, _UARM, uhw)
        fr[f"larm_{name}"], wrist = _limb(elbow, arm + bend, side, _LARM, lhw)
        fr[f"hand_{name}"], _ = _limb(wrist, arm + bend, side, 0.022 * bw, 0.022 * bw)
        fr[f"wrist_{name}"] = _frame(wrist, (side * _FOOT_U, 0.0), (0.0, _FOOT_U))
        thw, chw = 0.044 * hf * (0.7 + 0.3 * bw), 0.032 * (0.7 + 0.3 * bw)
        fr[f"uleg_{name}"], kpos = _limb((side * 0.046 * bw * hf, 0.47), leg, side, _ULEG, thw)
        fr[f"lleg_{name}"], ankle = _limb(kpos, leg + knee, side, _LLEG - 0.01, chw)
        fr[f"foot_{name}"] = _frame(ankle, (side * _FOOT_U, 0.0), (0.0, _FOOT_U))
        fr[f"hip_{name}"] = _frame((side * 0.1 * bw * hf, 0.45), (side * _FOOT_U, 0.0), (0.0, _FOOT_U))
        aspect[f"uarm_{name}"] = uhw / _UARM
        aspect[f"larm_{name}"] = lhw / _LARM
        aspect[f"uleg_{name}"] = thw / _ULEG
        aspect[f"lleg_{name}"] = chw / (_LLEG - 0.01)
    return fr, aspect


_FLAT_FRAMES, _ = skeleton(BodyShape(), FLAT_POSE)
#: flat-pose frames scaled to texture units (1 unit = 1 % of the figure height).
TEXTURE_FRAMES: Frames = {k: np.diag([100.0, 100.0, 1.0]) @ v for k, v in _FLAT_FRAMES.items()}


@dataclass(frozen=True)
class Part:
    """One polygon of a body or garment in the local frame of one segment."""

    frame: str
    poly: np.ndarray  # (n, 2) local coordinates
    paint: str = "main"  # main | dark | trim | second | skin | hair | eye | lip
    shade: float = 0.25  # strength of the cylinder shading across local u


def _arr(pts: list[tuple[float, float]]) -> np.ndarray:
    return np.asarray(pts, dtype=np.float64)


def ellipse(
    cx: float, cy: float, rx: float, ry: float, n: int = 20, a0: float = 0.0, a1: float = 2 * math.pi
) -> list[tuple[float, float]]:
    """Points on an ellipse arc (angles in radians, y down)."""
    return [
        (cx + rx * math.cos(a), cy + ry * math.sin(a))
        for a in np.linspace(a0, a1, n, endpoint=a1 - a0 < 2 * math.pi - 1e-9)
    ]


def capsule(ry: float, n: int = 6) -> np.ndarray:
    """A limb from local (0,0) to (0,1), half-width 1, with round caps (ry = hw/len)."""
    top = ellipse(0, 0, 1, ry, n, math.pi, 2 * math.pi)
    bottom = ellipse(0, 1, 1, ry, n, 0, math.pi)
    return _arr(top + bottom)


def mirror(poly: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Mirror a polygon across the local vertical axis."""
    return [(-x, y) for x, y in poly]


def body_parts(shape: BodyShape, aspect: dict[str, float]) -> list[Part]:
    """Skin and hair polygons of a figure, back to front."""
    parts: list[Part] = []
    hf = shape.hipf
    if shape.hair_style == "long":
        parts.append(
            Part(
                "head",
                _arr(
                    ellipse(0, -0.1, 1.05, 1.05, 14, math.pi, 2 * math.pi)
                    + [(1.15, 1.6), (0.9, 2.35), (-0.9, 2.35), (-1.15, 1.6)]
                ),
                "hair",
                0.15,
            )
        )
    for s in ("l", "r"):
        parts.append(Part(f"uleg_{s}", capsule(aspect[f"uleg_{s}"]), "skin"))
        parts.append(Part(f"lleg_{s}", capsule(aspect[f"lleg_{s}"]), "skin"))
        parts.append(Part(f"foot_{s}", _arr([(-0.8, -0.4), (0.8, -0.4), (1.6, 0.9), (1.7, 1.3), (-0.9, 1.3)]), "skin"))
    parts.append(
        Part(
            "torso",
            _arr(
                [
                    (-0.25, -0.25),
                    (0.25, -0.25),
                    (0.25, 0.0),
                    (0.95, 0.06),
                    (1.02, 0.18),
                    (0.86, 0.42),
                    (0.7, 0.7),
                    (0.86 * hf, 1.0),
                    (0.6 * hf, 1.12),
                    (-0.6 * hf, 1.12),
                    (-0.86 * hf, 1.0),
                    (-0.7, 0.7),
                    (-0.86, 0.42),
                    (-1.02, 0.18),
                    (-0.95, 0.06),
                    (-0.25, 0.0),
                ]
            ),
            "skin",
            0.3,
        )
    )
    for s in ("l", "r"):
        parts.append(Part(f"uarm_{s}", capsule(aspect[f"uarm_{s}"]), "skin"))
        parts.append(Part(f"larm_{s}", capsule(aspect[f"larm_{s}"]), "skin"))
        parts.append(Part(f"hand_{s}", _arr(ellipse(0, 0.9, 1.15, 1.3, 12)), "skin"))
    parts.append(Part("head", _arr(ellipse(0, 0, 0.8, 1.0, 24)), "skin", 0.3))
    parts.append(Part("head", _arr(ellipse(-0.3, 0.05, 0.11, 0.08, 8)), "eye", 0.0))
    parts.append(Part("head", _arr(ellipse(0.3, 0.05, 0.11, 0.08, 8)), "eye", 0.0))
    parts.append(Part("head", _arr(ellipse(0.0, 0.55, 0.2, 0.06, 8)), "lip", 0.0))
    if shape.hair_style != "bald":
        cap = ellipse(0, 0, 0.87, 1.08, 16, math.pi + 0.15, 2 * math.pi - 0.15)
        fringe = [(0.78, -0.28), (0.35, -0.45), (-0.2, -0.38), (-0.78, -0.28)]
        parts.append(Part("head", _arr(cap + fringe), "hair", 0.15))
        if shape.hair_style == "bun":
            parts.append(Part("head", _arr(ellipse(0, -1.15, 0.38, 0.32, 12)), "hair", 0.15))
    return parts


# --------------------------------------------------------------------------- garments

_LENGTH_HEM = {
    "dress": {"short": 1.5, "knee": 1.95, "long": 2.55},
    "skirt": {"short": 1.45, "knee": 1.9, "long": 2.55},
    "outerwear": {"short": 1.1, "knee": 1.85, "long": 2.3},
}


def _torso_body(p: dict, hem: float, *, sleeveless: bool, neckline: str, gap: float = 0.0) -> list[np.ndarray]:
    """Main body polygon(s) of a top / dress bodice / coat in the torso frame."""
    f = p["fit"]
    hw = 0.9 * f + 0.14 * max(0.0, hem - 1.05)
    nw = {"v-neck": 0.32, "collar": 0.26, "hooded": 0.3}.get(neckline, 0.3)
    if sleeveless:
        side = [(0.78, 0.03), (0.72, 0.26), (0.8 * f, 0.42)]
    else:
        side = [(1.04 * f, 0.05), (0.94 * f, 0.42)]
    # right half from the neck down to the hem
    right = [(nw, -0.02), *side, (0.8 * f, 0.7), (hw, hem)]
    if gap > 0:  # open coat: two panels showing what is worn underneath
        panel = [*right, (gap, hem), (gap, 0.4)]
        return [_arr(panel), _arr(mirror(panel))]
    if neckline == "v-neck":
        dip = [(0.0, 0.36)]
    elif neckline == "collar":
        dip = [(0.0, 0.07)]
    else:
        dip = [(-0.16, 0.1), (0.0, 0.125), (0.16, 0.1)]
    return [_arr(right + mirror(right)[::-1] + dip)]


def _collar(p: dict) -> list[Part]:
    flap = [(0.04, 0.1), (0.34, -0.06), (0.46, 0.05), (0.26, 0.22)]
    return [Part("torso", _arr(flap), "dark", 0.1), Part("torso", _arr(mirror(flap)), "dark", 0.1)]


def _hood() -> Part:
    pts = [
        (-0.58, -0.1),
        (-0.32, -0.16),
        (0.32, -0.16),
        (0.58, -0.1),
        (0.62, 0.06),
        (0.35, 0.17),
        (0.0, 0.21),
        (-0.35, 0.17),
        (-0.62, 0.06),
    ]
    return Part("torso", _arr(pts), "dark", 0.2)


def _sleeves(p: dict, sleeve: str, cuff: bool) -> list[Part]:
    w = p["sleeve_w"]
    out: list[Part] = []
    for s in ("l", "r"):
        if sleeve == "short":
            out.append(
                Part(
                    f"uarm_{s}",
                    _arr(
                        [
                            (-1.5 * w, 0.0),
                            (-0.6 * w, -0.16),
                            (0.7 * w, -0.12),
                            (1.5 * w, 0.08),
                            (1.42 * w, p["short_sleeve"]),
                            (-1.42 * w, p["short_sleeve"]),
                        ]
                    ),
                )
            )
        elif sleeve == "long":
            out.append(
                Part(
                    f"uarm_{s}",
                    _arr(
                        [
                            (-1.45 * w, 0.0),
                            (-0.6 * w, -0.16),
                            (0.7 * w, -0.12),
                            (1.45 * w, 0.08),
                            (1.35 * w, 1.1),
                            (-1.35 * w, 1.1),
                        ]
                    ),
                )
            )
            out.append(
                Part(f"larm_{s}", _arr([(-1.55 * w, -0.12), (1.55 * w, -0.12), (1.45 * w, 0.96), (-1.45 * w, 0.96)]))
            )
            if cuff:
                out.append(
                    Part(
                        f"larm_{s}",
                        _arr([(-1.5 * w, 0.84), (1.5 * w, 0.84), (1.45 * w, 0.97), (-1.45 * w, 0.97)]),
                        "dark",
                        0.1,
                    )
                )
    return out


def _skirt_poly(p: dict, hem: float, top: float = 0.68) -> np.ndarray:
    hw = 0.9 + p["flare"] * (hem - 0.7)
    mid = top + 0.45 * (hem - top)
    return _arr(
        [
            (-0.8, top),
            (0.8, top),
            (0.92 + 0.5 * (hw - 0.92), mid),
            (hw, hem),
            (0.0, hem + 0.03),
            (-hw, hem),
            (-0.92 - 0.5 * (hw - 0.92), mid),
        ]
    )


def garment_parts(cat: str, attrs: dict[str, str], p: dict) -> list[Part]:
    """Polygons of one garment (category, ground-truth attributes, render params)."""
    parts: list[Part] = []
    sleeve = attrs.get("sleeve", "long")
    neck = attrs.get("neckline", "crew")
    if cat in ("t-shirt", "shirt", "sweater", "outerwear", "dress"):
        if cat == "dress":
            hem = 0.74
        elif cat == "outerwear":
            hem = _LENGTH_HEM["outerwear"][attrs["length"]]
        else:
            hem = p["hem"]
        if neck == "hooded":
            parts.append(_hood())
        parts += _sleeves(p, sleeve, cuff=cat in ("sweater", "shirt", "outerwear"))
        gap = p.get("open_gap", 0.0) if cat == "outerwear" else 0.0
        for poly in _torso_body(p, hem, sleeveless=sleeve == "sleeveless", neckline=neck, gap=gap):
            parts.append(Part("torso", poly, "main", 0.3))
        if cat == "dress":
            parts.append(Part("torso", _skirt_poly(p, _LENGTH_HEM["dress"][attrs["length"]]), "main", 0.3))
        if cat == "sweater" or (cat == "t-shirt" and p.get("hem_band")):
            hw = 0.9 * p["fit"]
            parts.append(Part("torso", _arr([(-hw, hem - 0.06), (hw, hem - 0.06), (hw, hem), (-hw, hem)]), "dark", 0.3))
        if neck == "collar":
            parts += _collar(p)
        if neck == "hooded":
            for x in (-0.12, 0.12):
                parts.append(
                    Part(
                        "torso",
                        _arr([(x - 0.015, 0.12), (x + 0.015, 0.12), (x + 0.015, 0.42), (x - 0.015, 0.42)]),
                        "trim",
                        0.0,
                    )
                )
    elif cat == "skirt":
        parts.append(Part("torso", _skirt_poly(p, _LENGTH_HEM["skirt"][attrs["length"]], 0.7), "main", 0.3))
        parts.append(Part("torso", _arr([(-0.8, 0.68), (0.8, 0.68), (0.81, 0.76), (-0.81, 0.76)]), "dark", 0.2))
    elif cat in ("pants", "shorts"):
        w = p["leg_w"]
        parts.append(
            Part(
                "torso",
                _arr([(-0.8, 0.7), (0.8, 0.7), (0.93, 1.0), (0.9, 1.12), (0.0, 1.22), (-0.9, 1.12), (-0.93, 1.0)]),
                "main",
                0.3,
            )
        )
        parts.append(Part("torso", _arr([(-0.8, 0.68), (0.8, 0.68), (0.81, 0.76), (-0.81, 0.76)]), "dark", 0.2))
        length = attrs["length"]
        for s in ("l", "r"):
            if cat == "shorts":
                y1 = 0.45 if length == "short" else 0.95
                parts.append(
                    Part(f"uleg_{s}", _arr([(-1.3 * w, -0.2), (1.3 * w, -0.2), (1.35 * w, y1), (-1.35 * w, y1)]))
                )
            else:
                parts.append(
                    Part(f"uleg_{s}", _arr([(-1.22 * w, -0.2), (1.22 * w, -0.2), (1.15 * w, 1.06), (-1.15 * w, 1.06)]))
                )
                y1 = 0.97 if length == "long" else 0.5
                parts.append(
                    Part(f"lleg_{s}", _arr([(-1.45 * w, -0.1), (1.45 * w, -0.1), (1.55 * w, y1), (-1.55 * w, y1)]))
                )
    elif cat == "shoes":
        style = p["style"]
        for s in ("l", "r"):
            if style == "boot":
                poly = [(-1.15, -2.6), (1.05, -2.6), (1.1, 0.4), (2.0, 0.85), (2.05, 1.35), (-1.2, 1.35)]
            elif style == "heel":
                poly = [(-0.85, -0.2), (0.85, -0.2), (1.75, 0.95), (1.7, 1.3), (0.3, 1.12), (-0.55, 1.36), (-0.95, 1.3)]
            else:
                poly = [
                    (-1.05, -0.35),
                    (0.95, -0.35),
                    (1.5, 0.45),
                    (2.05, 0.85),
                    (2.05, 1.38),
                    (-1.15, 1.38),
                    (-1.25, 0.6),
                ]
            parts.append(Part(f"foot_{s}", _arr(poly), "main", 0.2))
            if style == "sneaker":
                parts.append(
                    Part(f"foot_{s}", _arr([(-1.2, 1.08), (2.08, 1.08), (2.08, 1.4), (-1.2, 1.4)]), "trim", 0.0)
                )
    elif cat == "bag":
        style = p["style"]
        side = p["side"]
        if style == "crossbody":
            a, b = (-0.8, 0.02), (0.9, 0.98)
            if side == "l":
                a, b = (0.8, 0.02), (-0.9, 0.98)
            t = 0.07
            parts.append(
                Part(
                    "torso", _arr([(a[0] - t, a[1]), (a[0] + t, a[1]), (b[0] + t, b[1]), (b[0] - t, b[1])]), "dark", 0.0
                )
            )
            parts.append(Part(f"hip_{side}", _arr([(-1.9, -0.6), (1.9, -0.6), (2.0, 2.3), (-2.0, 2.3)]), "main", 0.15))
            parts.append(
                Part(
                    f"hip_{side}", _arr([(-1.9, -0.6), (1.9, -0.6), (1.95, 0.5), (0.0, 0.8), (-1.95, 0.5)]), "dark", 0.1
                )
            )
        elif style == "clutch":
            parts.append(Part(f"wrist_{side}", _arr([(-2.3, 0.2), (2.3, 0.2), (2.3, 2.3), (-2.3, 2.3)]), "main", 0.15))
            parts.append(
                Part(f"wrist_{side}", _arr([(-2.3, 0.2), (2.3, 0.2), (2.3, 0.9), (0.0, 1.3), (-2.3, 0.9)]), "dark", 0.1)
            )
        else:  # tote
            outer = ellipse(0, 1.9, 1.8, 1.9, 10, math.pi, 2 * math.pi)
            inner = ellipse(0, 1.9, 1.45, 1.55, 10, math.pi, 2 * math.pi)
            parts.append(Part(f"wrist_{side}", _arr(outer + inner[::-1]), "dark", 0.0))
            parts.append(Part(f"wrist_{side}", _arr([(-2.5, 1.9), (2.5, 1.9), (2.8, 5.8), (-2.8, 5.8)]), "main", 0.2))
    elif cat == "hat":
        style = p["style"]
        if style == "beanie":
            parts.append(
                Part(
                    "head",
                    _arr(
                        ellipse(0, 0, 0.92, 1.15, 16, math.pi + 0.2, 2 * math.pi - 0.2)
                        + [(0.95, -0.15), (-0.95, -0.15)]
                    ),
                    "main",
                    0.25,
                )
            )
            parts.append(
                Part("head", _arr([(-0.97, -0.45), (0.97, -0.45), (0.97, -0.12), (-0.97, -0.12)]), "dark", 0.2)
            )
        elif style == "cap":
            parts.append(Part("head", _arr(ellipse(0, -0.25, 0.9, 0.92, 16, math.pi, 2 * math.pi)), "main", 0.25))
            parts.append(
                Part(
                    "head", _arr([(-0.9, -0.35), (0.9, -0.35), (1.7, -0.22), (1.6, -0.08), (-0.9, -0.16)]), "dark", 0.1
                )
            )
        else:  # brim hat
            parts.append(Part("head", _arr([(-0.68, -0.45), (-0.62, -1.4), (0.62, -1.4), (0.68, -0.45)]), "main", 0.25))
            parts.append(Part("head", _arr(ellipse(0, -0.45, 1.75, 0.3, 20)), "main", 0.1))
            parts.append(Part("head", _arr([(-0.69, -0.72), (0.69, -0.72), (0.69, -0.5), (-0.69, -0.5)]), "trim", 0.1))
    return parts
