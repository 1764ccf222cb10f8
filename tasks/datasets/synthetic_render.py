"""The generator of the embedded dataset (`tasks.datasets.synthetic`): shapes, layouts, textures, rendering.

Determinism: image ``i`` of (task, split) is a pure function of (VERSION, task, split, i,
image_size): one stream ``default_rng([VERSION, task, split, i])`` draws the layout, then the
rendering; no global state.  Pixel values come only from correctly rounded operations (+ - * /
sqrt, floor, min/max; no sin/exp, no BLAS, no sums over pixels), so the bytes agree across
machines (checked: two x86 hosts, numpy 2.4 and 2.5).  Bump VERSION whenever the output
changes: it is part of ``identity`` (tests/test_synthetic.py pins a digest).

Textures come from the PNGs bundled inside scikit-image's wheel (read directly, never through
``skimage.data``, whose other images are downloaded); without scikit-image procedural
noise is used instead and ``identity`` says so, because the images differ.
"""

from __future__ import annotations

import colorsys
import importlib.util
import math
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from . import IGNORE_INDEX

VERSION = 2
TASKS = ("classification", "multilabel", "segmentation")
SPLITS = ("train", "test")
TRAIN_PER_CLASS, TEST_PER_CLASS = 1300, 50       # classification (ImageNet-like pool)
SCENES = {"train": 10000, "test": 500}          # multilabel and segmentation
BG_CONTRAST = 0.5   # backgrounds span half the colour range of the v1 generator
NOISE_AMP = 0.08    # sensor noise amplitude, at most
EDGE_PX = 0.75       # |signed distance| below this is "ignore" (255) in masks: ~1.5 px band
CORE_PX = 1.5        # a point this deep gives a labelled pixel: its nearest pixel centre is
                     # <= 0.71 px away, so still >= 0.79 > EDGE_PX deep (1-Lipschitz sdf)
_TEX_CRC = 0x85110660  # crc of the bundled textures this VERSION was made with (see _bank)

# --- shapes: signed distance in local units (object radius = 1), negative inside.  Built only
# from discs, half-planes, min and max, so every function is 1-Lipschitz (a point's depth
# bounds its neighbours': _layout's visibility guarantee needs it); every shape lies inside
# the unit disc, and drawing clips to it: nothing (colour or mask) reaches past r + EDGE_PX.

def _circ(cx, cy, r):
    return lambda x, y: np.sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy)) - r


def _box(cx, cy, hx, hy):
    return lambda x, y: np.maximum(np.abs(x - cx) - hx, np.abs(y - cy) - hy)


def _poly(*verts):
    """Convex polygon as the max of its edges' half-plane distances."""
    v = np.array(verts, float)
    (ax, ay), (bx, by) = v[1] - v[0], v[2] - v[0]
    if ax * by - ay * bx < 0:    # make counter-clockwise: outward normals below
        v = v[::-1]
    e = np.roll(v, -1, axis=0) - v
    n = np.stack([e[:, 1], -e[:, 0]], 1) / np.hypot(e[:, 0], e[:, 1])[:, None]
    planes = [(float(a), float(b), float(a * p + b * q)) for (a, b), (p, q) in zip(n, v)]

    def f(x, y):
        d = None
        for a, b, c in planes:
            h = a * x + b * y - c
            d = h if d is None else np.maximum(d, h)
        return d
    return f


def _ngon(n, radius, phase=90.0):
    return _poly(*[(radius * math.cos(math.radians(phase + 360 * k / n)),
                    radius * math.sin(math.radians(phase + 360 * k / n))) for k in range(n)])


def _union(*fs):
    return lambda x, y: np.minimum.reduce([f(x, y) for f in fs])


def _minus(f, g):
    return lambda x, y: np.maximum(f(x, y), -g(x, y))


def _star(tips=5, outer=0.95, inner=0.42):
    pt = lambda r, deg: (r * math.cos(math.radians(deg)), r * math.sin(math.radians(deg)))
    step = 360 / tips
    spikes = [_poly(pt(inner, 90 + step * k - step / 2), pt(outer, 90 + step * k),
                    pt(inner, 90 + step * k + step / 2)) for k in range(tips)]
    return _union(_ngon(tips, inner, 90 + step / 2), *spikes)


SHAPES = {
    "disc": _circ(0, 0, 0.9),
    "ellipse": lambda x, y: (np.sqrt((x / 0.95) ** 2 + (y / 0.42) ** 2) - 1) * 0.42,
    "semicircle": lambda x, y: np.maximum(_circ(0, -0.3, 0.95)(x, y), -0.3 - y),
    "crescent": _minus(_circ(0, 0, 0.92), _circ(0.42, 0, 0.72)),
    "ring": _minus(_circ(0, 0, 0.92), _circ(0, 0, 0.5)),
    "square": _box(0, 0, 0.68, 0.68),
    "frame": _minus(_box(0, 0, 0.68, 0.68), _box(0, 0, 0.32, 0.32)),
    "triangle": _ngon(3, 0.95),
    "hexagon": _ngon(6, 0.92),
    "star": _star(),
    "cross": _union(_box(0, 0, 0.9, 0.27), _box(0, 0, 0.27, 0.9)),
    "tee": _union(_box(0, 0.4, 0.75, 0.22), _box(0, -0.2, 0.22, 0.6)),
    "ell": _union(_box(-0.45, 0, 0.22, 0.67), _box(0, -0.45, 0.67, 0.22)),
    "arrow": _union(_box(-0.3, 0, 0.5, 0.18), _poly((0.95, 0), (0.1, 0.6), (0.1, -0.6))),
    "heart": _union(_circ(-0.38, 0.28, 0.42), _circ(0.38, 0.28, 0.42),
                    _poly((-0.78, 0.18), (0.78, 0.18), (0, -0.88))),
    "hourglass": _union(_poly((0, -0.15), (0.72, 0.68), (-0.72, 0.68)),
                        _poly((0, 0.15), (-0.72, -0.68), (0.72, -0.68))),
}
CLASSES = list(SHAPES)
# Like categories in photos (most bananas are yellow), a class has a typical look, taken by TYPICAL_P of
# its objects: a hue (evenly spaced, in class order) and a surface pattern (a _fill kind, 0-5 in turn).
# Shape alone tells the classes apart; appearance is the cue features learnt from few images pick up first.
TYPICAL_P = 0.6
TYPICAL = [(k / len(CLASSES), k % 6) for k in range(len(CLASSES))]
_SHAPE_FNS = list(SHAPES.values())

# Candidate "core" points per shape: a local grid, kept where inside, with their depth
# (distance to the outline, or to the unit circle that drawing clips to).
_g = np.arange(-0.9375, 1, 0.125)
_GX, _GY = (a.ravel() for a in np.meshgrid(_g, _g))
_CORES = []
for _f in _SHAPE_FNS:
    _d = np.maximum(_f(_GX, _GY), np.sqrt(_GX * _GX + _GY * _GY) - 1)
    _CORES.append((_GX[_d < 0], _GY[_d < 0], -_d[_d < 0]))


# --- layout: classes and poses, drawn first from the image's stream: targets need no rendering.

def _layout(rng, size, cls=None):
    """Objects bottom to top.  Each earlier object keeps a core point (>= CORE_PX deep, in
    the frame) outside every later object's bounding disc, so it stays visible: the class
    set of the layout is exactly the set of labels in the mask."""
    if cls is not None:   # one large object, its centre >= 0.8 r from the border
        n, (rmin, rmax), inside = 1, (0.28 * size, 0.42 * size), 0.8
    else:
        n, (rmin, rmax), inside = 1 + int(rng.random() * 4), (0.13 * size, 0.26 * size), 0.3
    objs, cores = [], []
    for k in range(n):
        c = int(rng.random() * len(CLASSES)) if cls is None else cls
        for attempt in range(40):
            q = rng.random(5).tolist()   # one call per attempt: scalar draws are slow
            r = rmin + (rmax - rmin) * q[0]
            cx, cy = (inside * r + (size - 2 * inside * r) * x for x in q[1:3])
            a = 2 * math.pi * q[3]
            o = (c, cx, cy, r, math.cos(a), math.sin(a), 1.0 if q[4] < 0.5 else -1.0)
            gx, gy, depth = _CORES[c]
            u, v = gx[depth * r >= CORE_PX], gy[depth * r >= CORE_PX] * o[6]
            x, y = cx + r * (o[4] * u - o[5] * v), cy + r * (o[5] * u + o[4] * v)  # to image
            keep = (x >= 1) & (x <= size - 1) & (y >= 1) & (y <= size - 1)
            if not keep.any():
                continue
            reach = (r + CORE_PX) ** 2   # o draws nothing beyond r + EDGE_PX
            left = [(px[(px - cx) ** 2 + (py - cy) ** 2 > reach],
                     py[(px - cx) ** 2 + (py - cy) ** 2 > reach]) for px, py in cores]
            if all(len(px) for px, _ in left):
                objs.append(o)
                cores = left + [(x[keep], y[keep])]
                break
        else:   # no room (crowded scene, or a thin shape in a tiny image): stop adding
            if not objs:
                objs.append((c, size / 2, size / 2, rmax, 1.0, 0.0, 1.0))
            break
    return objs


def _rng(task, split, i):
    return np.random.default_rng([VERSION, TASKS.index(task), SPLITS.index(split), int(i)])


# --- texture bank

@lru_cache(maxsize=None)
def _bank():
    """(gray textures, RGB photos, crc) from PNGs bundled in scikit-image, 2x box-reduced."""
    spec = importlib.util.find_spec("skimage")
    gray, rgb = [], []
    if spec is not None and spec.origin:
        d = Path(spec.origin).parent / "data"
        try:
            for name, mode, out in [("brick.png", "L", gray), ("grass.png", "L", gray),
                                    ("gravel.png", "L", gray), ("moon.png", "L", gray),
                                    ("coffee.png", "RGB", rgb), ("chelsea.png", "RGB", rgb),
                                    ("astronaut.png", "RGB", rgb), ("ihc.png", "RGB", rgb)]:
                with Image.open(d / name) as im:
                    a = np.asarray(im.convert(mode), np.float32) / 255
                a = a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2]
                out.append((a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) / 4)
        except OSError:
            gray, rgb = [], []
    crc = 0
    for a in gray + rgb:
        crc = zlib.crc32(np.ascontiguousarray(a).tobytes(), crc)
    return gray, rgb, crc


def _crop(arr, rng, h, w, size):
    """Nearest-neighbour crop with random offset, scale and flip (wraps around)."""
    q = rng.random(4).tolist()
    step = (0.7 + 1.3 * q[0]) * 64 / size
    ys = int(q[1] * arr.shape[0]) + np.floor(np.arange(h) * step).astype(np.int64)
    xs = int(q[2] * arr.shape[1]) + np.floor(np.arange(w) * step).astype(np.int64)
    out = arr[np.ix_(ys % arr.shape[0], xs % arr.shape[1])]
    return out[::-1] if q[3] < 0.5 else out


def _noise(rng, h, w, cells):
    """Smooth value noise in [0, 1]: a random grid, bilinearly upsampled (elementwise only)."""
    g = rng.random((cells + 1, cells + 1), dtype=np.float32)

    def axis(n):
        p = np.arange(n, dtype=np.float32) * np.float32(cells / n)
        i0 = np.minimum(np.floor(p).astype(np.int64), cells - 1)
        return i0, (p - i0).astype(np.float32)
    (iy, wy), (ix, wx) = axis(h), axis(w)
    rows = g[iy] * (1 - wy)[:, None] + g[iy + 1] * wy[:, None]
    return rows[:, ix] * (1 - wx) + rows[:, ix + 1] * wx


def _clip01(x):
    return np.minimum(np.maximum(x, 0), 1)   # np.clip is several times slower on small arrays


def _colour(h, s, v):
    """RGB from three uniforms; saturation and value kept away from grey-black."""
    return np.array(colorsys.hsv_to_rgb(h, 0.25 + 0.75 * s, 0.3 + 0.7 * v), np.float32)


def _ramp(t, c1, c2):
    t = t[..., None]
    return c1 + (c2 - c1) * t


def _background(rng, size, bank):
    """Textured but muted (contrast <= BG_CONTRAST): objects are the high-contrast part of a scene."""
    gray, rgb, _ = bank
    q = rng.random(10).tolist()
    kind = int(q[0] * 4)
    c1, c2 = _colour(*q[2:5]), _colour(*q[5:8])
    c2 = c1 + (c2 - c1) * BG_CONTRAST
    if kind == 0 and gray:
        img = _ramp(_crop(gray[int(q[1] * len(gray))], rng, size, size, size), c1, c2)
    elif kind == 1 and rgb:   # photo crop, faded towards a colour
        img = _crop(rgb[int(q[1] * len(rgb))], rng, size, size, size) * BG_CONTRAST + c1 * (1 - BG_CONTRAST)
    else:                     # two octaves of value noise between two colours
        t = _noise(rng, size, size, 2 + int(q[8] * 6)) * 0.6 \
            + _noise(rng, size, size, 8 + int(q[9] * 12)) * 0.4
        img = _ramp(t, c1, c2)
    return np.array(img, dtype=np.float32)   # a fresh contiguous copy, drawn on in place


def _fill(rng, q, u, v, r, c1, c2, bank):
    """Object texture in local coordinates (so it rotates with the object); q: 4 uniforms."""
    kind, a, b = int(q[0] * 6), 2 * q[1] - 1, 2 * q[2] - 1
    if kind == 0:                             # solid with a shading gradient
        return _ramp(_clip01(0.5 + 0.4 * (a * u + b * v)), c1, c1 * 0.6 + c2 * 0.4)
    f = 1.5 + q[3] * max(0.1, min(5.0, r / 3) - 1.5)   # pattern period >= ~3 px
    if kind == 1:                             # stripes (triangle wave: no sin)
        t = np.abs(np.mod((a * u + b * v) * f, 2) - 1)
        return _ramp(_clip01((t - 0.5) * 4 + 0.5), c1, c2)
    if kind == 2:                             # checker
        return _ramp(np.mod(np.floor(u * f) + np.floor(v * f), 2), c1, c2)
    if kind == 3:                             # dots
        du, dv = np.mod(u * f, 1) - 0.5, np.mod(v * f, 1) - 0.5
        return _ramp((du * du + dv * dv < 0.09).astype(np.float32), c1, c2)
    if kind == 4 and bank[0]:                 # real texture, colourised
        return _ramp(_crop(bank[0][int(q[3] * len(bank[0]))], rng, *u.shape, 64), c1, c2)
    return _ramp(_clip01(0.5 + 0.5 * (a * u + b * v)), c1, c2)   # two-colour gradient


def _draw(img, mask, label, o, size, sdf_fn, rng, bank, plain=False):
    """Composite one object (antialiased from its signed distance) and update the mask.
    plain: distractor (flat shaded colour, no contrast check).  A class object takes its class's
    typical look (hue and surface pattern, see TYPICAL) with probability TYPICAL_P."""
    c, cx, cy, r, cs, sn, m = o
    x0, x1 = max(0, int(cx - r) - 1), min(size, int(cx + r) + 2)
    y0, y1 = max(0, int(cy - r) - 1), min(size, int(cy + r) + 2)
    q = rng.random(11).tolist()
    if x0 >= x1 or y0 >= y1:
        return
    dx = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx))[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy))[:, None]
    u, v = (cs * dx + sn * dy) / r, (cs * dy - sn * dx) * (m / r)
    d = np.maximum(sdf_fn(u, v), np.sqrt(u * u + v * v) - 1) * r   # signed distance, px
    region = img[y0:y1, x0:x1]
    typical = not plain and q[10] < TYPICAL_P
    if typical:   # the class's hue (+- 0.02), its pattern; lightness and saturation free
        hue, kind = TYPICAL[c]
        q[0], q[3], q[6] = hue + 0.04 * (q[0] - 0.5), hue + 0.04 * (q[3] - 0.5), (kind + 0.5) / 6
    c1, c2 = _colour(*q[0:3]), _colour(*q[3:6])
    if not plain:   # re-draw colours that would vanish into the background (<= 4 tries)
        bg = region[::3, ::3].reshape(-1, 3).mean(0)
        for _ in range(4):
            if np.abs((c1 + c2) * 0.5 - bg).max() >= 0.3:
                break
            p = rng.random(6).tolist()
            if typical:
                p[0], p[3] = q[0], q[3]
            c1, c2 = _colour(*p[0:3]), _colour(*p[3:6])
    fill = _fill(rng, [0.0] + q[7:10] if plain else q[6:10], u, v, r, c1, c2, bank)
    region += (fill - region) * _clip01(0.5 - d)[..., None]
    if mask is not None:
        sub = mask[y0:y1, x0:x1]
        sub[d <= -EDGE_PX] = label
        sub[np.abs(d) < EDGE_PX] = IGNORE_INDEX


def _capsule(w):
    return lambda x, y: np.sqrt(np.maximum(np.abs(x) - (0.95 - w), 0) ** 2 + y * y) - w


def _fragment(shape, ca, sa, off):
    return lambda x, y: np.maximum(shape(x, y), x * ca + y * sa - off)


def render_scene(task, split, i, image_size=64):
    """(image uint8 [S, S, 3], mask uint8 [S, S] or None, list of object class indices)."""
    size, bank, rng = image_size, _bank(), _rng(task, split, i)
    cls = i // (TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS) \
        if task == "classification" else None
    objs = _layout(rng, size, cls)          # the same stream goes on to render the image
    img = _background(rng, size, bank)
    mask = np.zeros((size, size), np.uint8) if task == "segmentation" else None
    for _ in range(int(rng.random() * 4)):   # 0-3 distractors (background in masks)
        q = rng.random(7).tolist()
        a, r = 2 * math.pi * q[0], (0.04 + 0.06 * q[1]) * size
        ca, sa = math.cos(a), math.sin(a)
        if q[2] < 0.5:   # a shape cut by a half-plane: a piece, never a whole class shape
            fn = _fragment(_SHAPE_FNS[int(q[3] * len(CLASSES))], ca, sa, q[4] * 0.7 - 0.4)
        else:            # a stroke of random width
            fn = _capsule(0.08 + 0.22 * q[3])
        _draw(img, None, 0, (0, q[5] * size, q[6] * size, r, ca, sa, 1.0), size, fn, rng, bank,
              plain=True)
    for o in objs:
        _draw(img, mask, o[0] + 1, o, size, _SHAPE_FNS[o[0]], rng, bank)
    # photometric jitter and sensor noise (uniform: no transcendental maths)
    q = rng.random(3).tolist()
    gain, bias, amp = 0.7 + 0.5 * q[0], 0.2 * q[1] - 0.1, NOISE_AMP * q[2]
    img = img * gain + (0.5 - 0.5 * gain + bias - 0.5 * amp)
    img += rng.random(img.shape, dtype=np.float32) * amp
    img = (_clip01(img) * 255 + 0.5).astype(np.uint8)
    return img, mask, [o[0] for o in objs]


@lru_cache(maxsize=None)
def _multilabel_targets(split, size):
    """[N, C] {0, 1} from the layouts alone (no rendering, ~0.2 ms an image); shared, read-only."""
    t = np.zeros((SCENES[split], len(CLASSES)), np.float32)
    for i in range(len(t)):
        t[i, [o[0] for o in _layout(_rng("multilabel", split, i), size)]] = 1
    t.flags.writeable = False
    return t
