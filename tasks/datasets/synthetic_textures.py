"""A second embedded domain for the transfer family: texture and colour classes from the embedded generator.

No object, no shape: a whole image is one surface pattern of the generator's `_fill` (solid shading, stripes,
checker, dots, a real texture, a gradient) at a random scale, orientation and offset, in a warm or a cool hue,
with the scenes' photometric jitter and sensor noise. Class = (pattern, warm / cool): 12 classes. The models are
pretrained on the shape scenes, so this is a (tiny) domain shift; it exercises the transfer protocol offline and
says nothing about transfer to real datasets.

Deterministic like the scenes: image i of a split is a pure function of (TEXTURE_VERSION, split, i, size).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from lowshot.model_zoo.files import digest

from .synthetic_render import _TEX_CRC, NOISE_AMP, SPLITS, _bank, _clip01, _colour, _fill

TEXTURE_VERSION = 1
PATTERNS = ("shaded", "stripes", "checker", "dots", "photo-texture", "gradient")
CLASSES = [f"{p}-{tone}" for p in PATTERNS for tone in ("warm", "cool")]
PER_CLASS = {"train": 60, "test": 30}


def render_texture(split: str, i: int, image_size: int = 64) -> np.ndarray:
    """Image `i` of `split` as uint8 [S, S, 3]; its class is i // PER_CLASS[split]."""
    size, bank = int(image_size), _bank()
    rng = np.random.default_rng([TEXTURE_VERSION, 7, SPLITS.index(split), int(i)])
    pattern, cool = divmod(int(i) // PER_CLASS[split], 2)
    q = rng.random(12).tolist()
    hue = (0.55 + 0.25 * q[0]) if cool else (0.95 + 0.2 * q[0]) % 1.0  # cool: cyan-violet; warm: red-yellow
    c1 = _colour(hue, q[1], 0.5 + 0.5 * q[2])
    c2 = _colour((hue + 0.1 * q[3] - 0.05) % 1.0, q[4], 0.3 * q[5])  # a darker second tone of the same hue
    a = 2 * math.pi * q[6]
    ca, sa = math.cos(a), math.sin(a)
    r = (0.25 + 0.5 * q[7]) * size  # the pattern's scale ("object radius" of _fill)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x, y = x - q[8] * size, y - q[9] * size
    u, v = (x * ca + y * sa) / r, (y * ca - x * sa) / r
    img = np.array(_fill(rng, [(pattern + 0.5) / len(PATTERNS), q[10], q[11], rng.random()], u, v, r, c1, c2, bank),
                   np.float32)
    g = rng.random(3).tolist()
    gain, bias, amp = 0.7 + 0.5 * g[0], 0.2 * g[1] - 0.1, NOISE_AMP * g[2]
    img = img * gain + (0.5 - 0.5 * gain + bias - 0.5 * amp)
    img += rng.random(img.shape, dtype=np.float32) * amp
    return (_clip01(img) * 255 + 0.5).astype(np.uint8)


class SyntheticTextures:
    """One split of the texture domain; images rendered on access."""

    def __init__(self, split: str = "train", image_size: int = 64):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split, self.image_size, self.classes = split, int(image_size), list(CLASSES)
        per = PER_CLASS[split]
        self.names = [f"{c}_{n}.png" for c in CLASSES for n in range(per)]
        self.targets = np.arange(len(self.names), dtype=np.int64) // per
        tex = "" if _bank()[2] == _TEX_CRC else f"+tex{_bank()[2]:08x}"
        self.identity = f"synthetic-textures-v{TEXTURE_VERSION}{tex}/{split}/{self.image_size}px"
        self._index = {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def index_of(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"{name!r} is not an image of {self.identity}") from None

    def fingerprint(self, indices, masks: bool = False) -> str:
        """The images are a pure function of `identity` and their index: their names say it all."""
        return digest([self.names[int(i)] for i in indices])

    def load_image(self, i: int):
        return Image.fromarray(render_texture(self.split, i, self.image_size), "RGB")
