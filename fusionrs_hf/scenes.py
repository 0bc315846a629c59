"""Procedural aerial-like scenes with infrared-style counterparts and captions that follow the scene.

Used by the embedded sample (``fusionrs demo``), the tests and the benchmarks, so that every
test works on real JPEG bytes with texture (not flat colour) without downloading anything.
A scene is a land-cover label map (vegetation, fields, water, road, roofs, bare soil) rendered
twice: once with RGB palettes and texture, once with per-class IR-style intensities (water dark,
vegetation and roofs bright), channels nearly but not exactly equal, like DiffV2IR output.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

VEG, FIELD, WATER, ROAD, ROOF, BARE = range(6)

SCENE_CLASSES: dict[str, tuple[str, ...]] = {
    # class -> elements it is built from
    "farmland": ("fields", "road"),
    "river": ("river", "fields"),
    "residential": ("buildings", "roads"),
    "highway": ("road", "vegetation"),
    "forest": ("vegetation", "river"),
    "industrial": ("buildings", "bare soil", "road"),
}

_RGB = {
    VEG: (52, 92, 44), FIELD: (120, 140, 60), WATER: (38, 70, 92),
    ROAD: (105, 104, 100), ROOF: (170, 96, 80), BARE: (160, 138, 104),
}
_FIELD_COLOURS = [(118, 150, 62), (160, 150, 84), (92, 122, 50), (176, 160, 110), (138, 128, 70)]
_ROOF_COLOURS = [(172, 90, 78), (150, 150, 150), (196, 190, 180), (120, 110, 104), (90, 96, 120)]
_IR = {VEG: 0.78, FIELD: 0.62, WATER: 0.10, ROAD: 0.32, ROOF: 0.88, BARE: 0.55}


@dataclass
class Scene:
    scene_class: str
    elements: tuple[str, ...]
    rgb: np.ndarray
    ir: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)


def _noise(rng: np.random.Generator, size: int, scales=(4, 8, 16, 64)) -> np.ndarray:
    """Multi-octave value noise in [0, 1]: cheap texture that compresses like real imagery."""
    out = np.zeros((size, size), np.float32)
    total = 0.0
    for i, s in enumerate(scales):
        w = 0.5 ** i
        small = Image.fromarray(rng.random((s, s), dtype=np.float32), mode="F")
        out += w * np.asarray(small.resize((size, size), Image.BILINEAR), np.float32)
        total += w
    out /= total
    out += 0.08 * rng.random((size, size), dtype=np.float32)
    return np.clip((out - out.min()) / (np.ptp(out) + 1e-6), 0, 1)


def _fields(rng, labels, colours, size, n_split=5):
    rects = [(0, 0, size, size)]
    for _ in range(n_split):
        nxt = []
        for x0, y0, x1, y1 in rects:
            if x1 - x0 > y1 - y0 and x1 - x0 > 24:
                c = int(rng.integers(x0 + 8, x1 - 8))
                nxt += [(x0, y0, c, y1), (c, y0, x1, y1)]
            elif y1 - y0 > 24:
                c = int(rng.integers(y0 + 8, y1 - 8))
                nxt += [(x0, y0, x1, c), (x0, c, x1, y1)]
            else:
                nxt.append((x0, y0, x1, y1))
        rects = nxt
    for x0, y0, x1, y1 in rects:
        labels[y0:y1, x0:x1] = FIELD
        colours[y0:y1, x0:x1] = _FIELD_COLOURS[int(rng.integers(len(_FIELD_COLOURS)))]
        # a thin boundary so parcels read as parcels
        labels[y0:y1, x0:x0 + 1] = VEG
    return len(rects)


def _river(rng, labels, size):
    y = np.arange(size)
    amp, freq, phase = rng.uniform(0.05, 0.2) * size, rng.uniform(1, 3) / size, rng.uniform(0, 6.3)
    centre = size / 2 + amp * np.sin(2 * np.pi * freq * y + phase) + rng.uniform(-0.15, 0.15) * size
    width = rng.uniform(0.06, 0.14) * size
    xx = np.arange(size)[None, :]
    mask = np.abs(xx - centre[:, None]) < width / 2
    if rng.random() < 0.5:
        mask = mask.T
    labels[mask] = WATER
    return 1


def _roads(rng, labels, size, n):
    for _ in range(n):
        w = int(rng.integers(max(2, size // 96), max(3, size // 40)))
        p = int(rng.integers(w, size - w))
        if rng.random() < 0.5:
            labels[p:p + w, :] = ROAD
        else:
            labels[:, p:p + w] = ROAD
    return n


def _buildings(rng, labels, colours, size, density):
    n = 0
    step = max(10, size // int(rng.integers(8, 14)))
    for y in range(2, size - step, step):
        for x in range(2, size - step, step):
            if rng.random() > density or labels[y, x] in (WATER, ROAD):
                continue
            h, w = int(rng.integers(step // 2, step - 2)), int(rng.integers(step // 2, step - 2))
            labels[y:y + h, x:x + w] = ROOF
            colours[y:y + h, x:x + w] = _ROOF_COLOURS[int(rng.integers(len(_ROOF_COLOURS)))]
            n += 1
    return n


def render_scene(rng: np.random.Generator, size: int = 256, scene_class: str | None = None) -> Scene:
    """One scene: label map, RGB rendering and IR-style rendering, as uint8 HxWx3 arrays."""
    if scene_class is None:
        scene_class = list(SCENE_CLASSES)[int(rng.integers(len(SCENE_CLASSES)))]
    labels = np.full((size, size), VEG, np.uint8)
    colours = np.zeros((size, size, 3), np.float32)
    counts: dict[str, int] = {}
    if scene_class == "farmland":
        counts["fields"] = _fields(rng, labels, colours, size)
        counts["roads"] = _roads(rng, labels, size, int(rng.integers(1, 3)))
    elif scene_class == "river":
        counts["fields"] = _fields(rng, labels, colours, size, n_split=4)
        counts["rivers"] = _river(rng, labels, size)
    elif scene_class == "residential":
        counts["roads"] = _roads(rng, labels, size, int(rng.integers(2, 5)))
        counts["buildings"] = _buildings(rng, labels, colours, size, 0.8)
    elif scene_class == "highway":
        counts["roads"] = _roads(rng, labels, size, int(rng.integers(1, 3)))
    elif scene_class == "forest":
        counts["rivers"] = _river(rng, labels, size) if rng.random() < 0.6 else 0
    elif scene_class == "industrial":
        labels[:] = BARE
        counts["roads"] = _roads(rng, labels, size, int(rng.integers(1, 3)))
        counts["buildings"] = _buildings(rng, labels, colours, size, 0.55)
    else:
        raise ValueError(f"unknown scene class {scene_class!r}")

    tex = _noise(rng, size)
    fine = _noise(rng, size, scales=(32, 128))
    base = np.zeros((size, size, 3), np.float32)
    for lab, col in _RGB.items():
        base[labels == lab] = col
    custom = (colours.sum(-1) > 0) & np.isin(labels, (FIELD, ROOF))
    base[custom] = colours[custom]
    shade = 0.75 + 0.5 * tex[..., None] * (0.6 + 0.4 * fine[..., None])
    rgb = np.clip(base * shade + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)

    inten = np.zeros((size, size), np.float32)
    for lab, v in _IR.items():
        inten[labels == lab] = v
    ir_gray = np.clip(inten * (0.8 + 0.35 * tex) + 0.05 * (fine - 0.5), 0, 1) * 255
    blurred = np.asarray(Image.fromarray(ir_gray.astype(np.uint8)).resize((size // 2, size // 2), Image.BILINEAR)
                         .resize((size, size), Image.BILINEAR), np.float32)
    tint = rng.uniform(-3, 3, 3).astype(np.float32)
    ir = np.clip(blurred[..., None] + tint + rng.normal(0, 2, (size, size, 3)), 0, 255).astype(np.uint8)
    present = tuple(k for k, v in counts.items() if v)
    return Scene(scene_class, present, rgb, ir, counts)


def jpeg_bytes(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    """Lossless PNG, as DiffV2IR writes its outputs."""
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return buf.getvalue()


_NOUN = {
    "farmland": "a farmland", "river": "a river landscape", "residential": "a residential area",
    "highway": "a highway corridor", "forest": "a forest", "industrial": "an industrial area",
}
_CAPTION_TEMPLATES = (
    "An aerial view of {noun}{details}.",
    "A remote sensing image of {noun}{details}.",
    "Satellite image showing {noun}{details}.",
)
_IR_TEMPLATES = (
    "An infrared remote sensing image of {noun}{details}.",
    "An infrared image of {noun}{details}.",
)


def _rgb_details(scene: Scene) -> str:
    c, parts = scene.counts, []
    if c.get("fields"):
        parts.append(f"{c['fields']} rectangular fields")
    if c.get("rivers"):
        parts.append("a winding river")
    if c.get("buildings"):
        parts.append(f"{c['buildings']} buildings")
    if c.get("roads"):
        parts.append(f"{c['roads']} straight road{'s' if c['roads'] > 1 else ''}")
    if scene.scene_class == "forest":
        parts.append("dense trees")
    if scene.scene_class == "industrial":
        parts.append("bare soil")
    return (" with " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]) if parts else ""


def _ir_details(scene: Scene) -> str:
    c, parts = scene.counts, []
    if c.get("rivers"):
        parts.append("the river appears as a dark low-texture band")
    if c.get("fields"):
        parts.append("field parcels show different gray intensities")
    if c.get("buildings"):
        parts.append("building roofs appear as bright blocks")
    if c.get("roads"):
        parts.append("roads form straight gray lines")
    if scene.scene_class == "forest":
        parts.append("the tree canopy is bright and textured")
    return (", where " + ", ".join(parts)) if parts else ""


def captions(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """(RGB caption, IR-aware caption), both naming the scene's elements."""
    noun = _NOUN[scene.scene_class]
    cap = _CAPTION_TEMPLATES[int(rng.integers(len(_CAPTION_TEMPLATES)))].format(noun=noun, details=_rgb_details(scene))
    ir_cap = _IR_TEMPLATES[int(rng.integers(len(_IR_TEMPLATES)))].format(noun=noun, details=_ir_details(scene))
    return cap, ir_cap
