"""Datasets of the benchmark suite.

One module per source (``synthetic`` is the embedded, generated-on-the-fly dataset that lets
every task run offline); import the module you need, e.g.
``from tasks.datasets.synthetic import SyntheticScenes``.
"""

from lowshot.model_zoo.errors import BadInputError, MissingFileError
from lowshot.model_zoo.transforms import to_rgb

# Label maps: this value marks pixels that are neither scored nor trained on (VOC's 255 border, ADE20K's raw 0
# "other" after mmseg's reduce_zero_label). Every reader, the head and the metrics use this one value.
IGNORE_INDEX = 255


class SplitError(BadInputError):
    """A split file or dataset listing that cannot be used as it is (the message names the file)."""


def read_name_list(path, parse=None) -> list[str]:
    """The image names of a split file: one per non-blank line (surrounding white space stripped), or
    `parse(line)` of each line. A missing file is a FileNotFoundError; an unreadable or empty one, or one that
    names an image twice, is a SplitError; each names the file."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"split file {path} does not exist")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise SplitError(f"cannot read split file {path}: {e}") from None
    names = []
    for lineno, line in enumerate(lines, 1):
        if line:
            name = parse(line) if parse else line
            if not name:
                raise SplitError(f"split file {path}, line {lineno}: cannot read an image name from {line!r}")
            names.append(name)
    if not names:
        raise SplitError(f"split file {path} is empty")
    if len(set(names)) != len(names):
        seen, twice = set(), []
        for n in names:
            if n in seen:
                twice.append(n)
            seen.add(n)
        raise SplitError(f"split file {path} lists some images more than once, e.g. {sorted(set(twice))[:5]}")
    return names


def find_dataset_folder(root, name: str, candidates, markers, hint: str = "") -> str:
    """The real path of the first `root/<candidate>` ("" = `root` itself) holding every one of `markers`; a
    FileNotFoundError naming `name`, the folders tried and what they lack otherwise."""
    import os

    if not root:
        raise MissingFileError("this task needs --data-root")
    root_abs = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root_abs):
        raise MissingFileError(f"{name} root {root_abs} does not exist or is not a directory")
    tried = [os.path.join(root_abs, c) if c else root_abs for c in candidates]
    for folder in tried:
        if all(os.path.exists(os.path.join(folder, m)) for m in markers):
            return os.path.realpath(folder)
    raise MissingFileError(f"could not find {name} under {root_abs}: expected "
                            f"{' and '.join(m + '/' for m in markers)} in one of {', '.join(tried)}" + hint)


def is_hidden(name: str) -> bool:
    """Hidden files and folders (`.DS_Store`, macOS AppleDouble `._x.JPEG`, `.ipynb_checkpoints`): never data."""
    return name.startswith(".")


def load_rgb(path):
    """An image file as 8-bit RGB (`to_rgb`); a missing, truncated or unreadable file is an error naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except FileNotFoundError:
        raise MissingFileError(f"image {path} does not exist") from None
    except OSError as exc:
        raise BadInputError(f"cannot read image {path}: {exc}") from None
    except Image.DecompressionBombError as exc:  # refused, not read: its pixels would fill the memory
        raise BadInputError(f"image {path} is refused: {exc} (PIL.Image.MAX_IMAGE_PIXELS)") from exc


def read_label_png(path):
    """A label map PNG as (PIL mode, array of its raw pixel values, palette indices not colours)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode, np.array(im)
    except FileNotFoundError:
        raise MissingFileError(f"label map {path} does not exist") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise BadInputError(f"cannot read label map {path}: {exc}") from exc


class NamedImages:
    """Mixin for datasets with a `names` list, an `identity` and `image_path(i)` (and `mask_path(i)` for
    segmentation): len(), index_of(name) and fingerprint(indices)."""

    def fingerprint(self, indices, masks: bool = False) -> str:
        """Digest of the images' names, file sizes and modification times (with `masks=True` their label maps'
        too): it changes when a file is replaced in place, so cached features and records never outlive it."""
        import os

        import numpy as np

        from lowshot.model_zoo.files import digest

        indices = np.asarray(indices, np.int64)
        memo = self.__dict__.setdefault("_fingerprints", {})
        key = (digest(indices.tolist()), masks)
        if key not in memo:
            def stat(path):
                st = os.stat(path)
                return [st.st_size, st.st_mtime_ns]
            memo[key] = digest([[self.names[i], *stat(self.image_path(i)), *(stat(self.mask_path(i)) if masks else [])]
                                for i in indices.tolist()])
        return memo[key]

    def __len__(self) -> int:
        return len(self.names)

    def index_of(self, name: str) -> int:
        """Index of the image called ``name`` (KeyError naming this dataset otherwise)."""
        if getattr(self, "_index", None) is None:
            self._index = {n: i for i, n in enumerate(self.names)}
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"{name!r} is not an image of {self.identity}") from None


class FirstImages:
    """The first `n` images of a dataset: a smaller pool with the same images, names, labels and identity."""

    def __init__(self, source, n: int):
        self.source, self.n = source, min(int(n), len(source))
        self.classes = source.classes
        self.names = list(source.names[:self.n])
        self.identity = source.identity
        targets, ignore = getattr(source, "targets", None), getattr(source, "ignore", None)
        self.targets = None if targets is None else targets[:self.n]
        self.ignore = None if ignore is None else ignore[:self.n]

    def __len__(self):
        return self.n

    def index_of(self, name):
        i = self.source.index_of(name)
        if i >= self.n:
            raise KeyError(f"{name!r} is not among the first {self.n} images of {self.identity}")
        return i

    def load_image(self, i):
        return self.source.load_image(i)

    def load_mask(self, i):
        return self.source.load_mask(i)

    def fingerprint(self, indices, masks: bool = False) -> str:
        return self.source.fingerprint(indices, masks)



class EvenlySpacedImages:
    """`n` images of a dataset taken at even steps through it (every k-th), so that a folder sorted by class keeps
    every class: a fixed, smaller evaluation set (the training-loop probe's). Names, labels and identity are the
    dataset's; the fingerprint is that of the images taken."""

    def __init__(self, source, n: int):
        import numpy as np

        self.source = source
        self.taken = np.unique(np.linspace(0, len(source) - 1, min(int(n), len(source))).round().astype(np.int64))
        self.classes = getattr(source, "classes", None)
        self.names = [source.names[i] for i in self.taken]
        self.identity = source.identity
        targets, ignore = getattr(source, "targets", None), getattr(source, "ignore", None)
        self.targets = None if targets is None else np.asarray(targets)[self.taken]
        self.ignore = None if ignore is None else np.asarray(ignore)[self.taken]

    def __len__(self):
        return len(self.taken)

    def load_image(self, i):
        return self.source.load_image(int(self.taken[i]))

    def fingerprint(self, indices, masks: bool = False) -> str:
        import numpy as np

        return self.source.fingerprint(self.taken[np.asarray(indices, np.int64)], masks)


class RememberedImages:
    """A dataset whose images, once loaded, are kept in memory: a training-loop probe reads the same labelled and
    evaluation images at every step (decoded or rendered once). Everything else is the dataset's own."""

    def __init__(self, source):
        self.source = source
        self._images: dict[int, object] = {}

    def __getattr__(self, name):
        if name in ("source", "_images"):  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)

    def __len__(self):
        return len(self.source)

    def load_image(self, i):
        i = int(i)
        if i not in self._images:
            self._images[i] = self.source.load_image(i)
        return self._images[i]
