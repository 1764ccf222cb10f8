"""Task registry: name -> builder. Each task declares its family and main score; the runner knows nothing else.

Real-data tasks read their dataset under `--data-root` (the dataset folder itself, or a folder holding it
under its usual name: imagenet/, VOCdevkit/, coco/, ADEChallengeData2016/). Embedded tasks run offline on
the generated dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


# The embedded multi-label and segmentation tasks use the first 2,000 of the 10,000 generated training scenes
# (1 % = 20 images, full = 2,000), so the offline benchmark of one model takes minutes on two CPU cores.
EMBEDDED_SCENE_POOL = 2000


@dataclass(frozen=True)
class TaskOptions:
    data_root: str | None = None  # real dataset root
    splits: str | None = None  # local split files instead of downloading (ImageNet)
    custom_splits: bool = False  # accept non-official split files


@dataclass(frozen=True)
class TaskEntry:
    name: str
    family: str
    embedded: bool
    build: Callable  # TaskOptions -> task object with .name, .family, .main_score, .run(model, ctx)
    description: str


def locate(root: str | None, marker: str, subfolder: str) -> Path:
    """`root` if it holds `marker`, else `root/subfolder` if that does; FileNotFoundError otherwise."""
    if not root:
        raise FileNotFoundError("this task needs --data-root")
    for candidate in (Path(root).expanduser(), Path(root).expanduser() / subfolder):
        if (candidate / marker).exists():
            return candidate
    raise FileNotFoundError(f"no {marker} under {root} or {Path(root) / subfolder}")


def _imagenet(opts: TaskOptions):
    from .classification import LowShotClassification, imagenet_data
    root = locate(opts.data_root, "train", "imagenet")
    return LowShotClassification("imagenet-lowshot", imagenet_data(root, opts.splits, opts.custom_splits))


def _embedded_classification(opts: TaskOptions):
    from .classification import LowShotClassification, embedded_data
    return LowShotClassification("embedded-lowshot", embedded_data())


def _voc07(opts: TaskOptions):
    from .multilabel import LowShotMultiLabel, voc07_data
    if not opts.data_root:
        raise FileNotFoundError("voc07-multilabel needs --data-root")
    return LowShotMultiLabel("voc07-multilabel", voc07_data(opts.data_root))


def _coco(opts: TaskOptions):
    from .multilabel import LowShotMultiLabel, coco_data
    return LowShotMultiLabel("coco-multilabel", coco_data(locate(opts.data_root, "annotations", "coco")))


def _embedded_multilabel(opts: TaskOptions):
    from .multilabel import LowShotMultiLabel, embedded_data
    return LowShotMultiLabel("embedded-multilabel", embedded_data(train_pool=EMBEDDED_SCENE_POOL))


def _ade20k_seg(opts: TaskOptions):
    from .segmentation import LowShotSegmentation, ade20k_data
    if not opts.data_root:
        raise FileNotFoundError("ade20k-seg needs --data-root")
    return LowShotSegmentation("ade20k-seg", ade20k_data(opts.data_root))


def _voc12_seg(opts: TaskOptions):
    from .segmentation import LowShotSegmentation, voc12_data
    if not opts.data_root:
        raise FileNotFoundError("voc12-seg needs --data-root")
    return LowShotSegmentation("voc12-seg", voc12_data(opts.data_root))


def _embedded_seg(opts: TaskOptions):
    from .segmentation import EmbeddedSegmentation, embedded_data
    return EmbeddedSegmentation("embedded-seg", embedded_data(), train_pool=EMBEDDED_SCENE_POOL)


TASKS: dict[str, TaskEntry] = {t.name: t for t in [
    TaskEntry("imagenet-lowshot", "classification", False, _imagenet,
              "ImageNet-1K, 1/2/5 img per class x 3 official seeds + 1 %, top-1 on val"),
    TaskEntry("voc07-multilabel", "multilabel", False, _voc07,
              "Pascal VOC 2007, 1/2/5 img per class, 1 %, 10 % x 3 seeds + full, mAP on test"),
    TaskEntry("coco-multilabel", "multilabel", False, _coco,
              "MS-COCO 2014, 1/2/5 img per class, 1 %, 10 % x 3 seeds + full, mAP on val2014"),
    TaskEntry("embedded-lowshot", "classification", True, _embedded_classification,
              "embedded synthetic scenes, 1/2/5 img per class x 3 seeds + 1 %, top-1"),
    TaskEntry("embedded-multilabel", "multilabel", True, _embedded_multilabel,
              "embedded multi-object scenes, 1/2/5 img per class, 1 %, 10 % x 3 seeds + full, mAP"),
    TaskEntry("ade20k-seg", "segmentation", False, _ade20k_seg,
              "ADE20K, 1 %, 5 %, 10 % x 3 seeds + full, linear head on patch tokens, mIoU on validation"),
    TaskEntry("voc12-seg", "segmentation", False, _voc12_seg,
              "Pascal VOC 2012 (train_aug when present), 1 %, 5 %, 10 % x 3 seeds + full, linear head, mIoU on val"),
    TaskEntry("embedded-seg", "segmentation", True, _embedded_seg,
              "embedded scenes, 1 %, 5 %, 10 % x 3 seeds + full, linear head on patch tokens, mIoU"),
]}


def get_task(name: str) -> TaskEntry:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def embedded_tasks() -> list[str]:
    return [t.name for t in TASKS.values() if t.embedded]


def real_tasks() -> list[str]:
    return [t.name for t in TASKS.values() if not t.embedded]
