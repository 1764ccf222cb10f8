"""Task registry: name -> the task's declaration (its protocol class and settings) and how its data is read.

`TaskEntry.protocol` is the task family's class (`LowShotClassification`, ...), whose class attributes declare the
family, main score, axis labels, settings and classifiers; `settings` overrides the family's settings for this
task. The leaderboard and the figures read `declaration(name)`, which needs no data. `build(opts)` reads and
checks the dataset and returns the runnable task.

Real-data tasks read their dataset under `--data-root` (the dataset folder itself, or a folder holding it under its
usual name: imagenet/, VOCdevkit/, coco/, ADEChallengeData2016/; a transfer dataset always under its usual name,
e.g. oxford-iiit-pet/). Embedded tasks run offline on the generated dataset. `TASK_GROUPS` names sets of tasks:
`transfer` is every transfer dataset (`expand` says which tasks a --task list means).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lowshot.model_zoo.errors import UnknownNameError

from .base import LowShotTask, Setting
from .datasets import find_dataset_folder
from .classification import LowShotClassification, embedded_data as embedded_classification, imagenet_data
from .multilabel import LowShotMultiLabel, coco_data, embedded_data as embedded_multilabel, voc07_data
from .transfer import TRANSFER_DATASETS, LowShotTransfer, protocol_of, transfer_data
from .transfer import embedded_data as embedded_transfer
from .segmentation import (EmbeddedSegmentation, LowShotSegmentation, ade20k_data, embedded_data as embedded_seg,
                           voc12_data)

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
    protocol: type[LowShotTask]
    embedded: bool
    data: Callable  # (TaskOptions, settings) -> the task's data; FileNotFoundError when it is not there
    description: str
    settings: tuple[Setting, ...] | None = None  # None: the protocol's own settings
    options: dict | None = None  # extra keyword arguments of the protocol class
    folder: str = ""  # the dataset folder it expects under --data-root, in words (`lowshot tasks`)
    locate: Callable | None = None  # data root -> the dataset folder found; FileNotFoundError when absent

    @property
    def declared_settings(self) -> tuple[Setting, ...]:
        return self.settings or self.protocol.settings

    @property
    def family(self) -> str:
        return self.protocol.family

    def build(self, opts: TaskOptions) -> LowShotTask:
        settings = self.declared_settings
        return self.protocol(self.name, self.data(opts, settings), settings=settings, **(self.options or {}))


def _imagenet_folder(root) -> str:
    return find_dataset_folder(root, "imagenet", ["", "imagenet"], ("train",))


def _coco_folder(root) -> str:
    return find_dataset_folder(root, "coco", ["", "coco"], ("annotations",))


def _ade20k_folder(root) -> str:
    return find_dataset_folder(root, "ADEChallengeData2016", ["ADEChallengeData2016", ""], ("images", "annotations"))


def _voc_folder(year: str):
    def locate(root) -> str:
        from .datasets.voc import resolve_voc_dir
        return resolve_voc_dir(root, year)
    return locate


TASKS: dict[str, TaskEntry] = {t.name: t for t in [
    TaskEntry("imagenet-lowshot", LowShotClassification, False,
              lambda o, s: imagenet_data(_imagenet_folder(o.data_root), s, o.splits, o.custom_splits),
              "ImageNet-1K, 1/2/5 img per class x 3 official seeds + 1 %, top-1 on val",
              folder="imagenet/ (ImageFolder train/ and val/)", locate=_imagenet_folder),
    TaskEntry("voc07-multilabel", LowShotMultiLabel, False, lambda o, s: voc07_data(o.data_root),
              "Pascal VOC 2007, 1/2/5 img per class, 1 %, 10 % x 3 seeds + full, mAP on test",
              folder="VOCdevkit/VOC2007/ (JPEGImages/, ImageSets/, Annotations/)", locate=_voc_folder("2007")),
    TaskEntry("coco-multilabel", LowShotMultiLabel, False,
              lambda o, s: coco_data(_coco_folder(o.data_root)),
              "MS-COCO 2014, 1/2/5 img per class, 1 %, 10 % x 3 seeds + full, mAP on val2014",
              folder="coco/ (annotations/, train2014/, val2014/)", locate=_coco_folder),
    TaskEntry("embedded-lowshot", LowShotClassification, True, lambda o, s: embedded_classification(s),
              "embedded synthetic scenes, 1/2/5 img per class x 3 seeds + 1 %, top-1"),
    TaskEntry("embedded-multilabel", LowShotMultiLabel, True,
              lambda o, s: embedded_multilabel(train_pool=EMBEDDED_SCENE_POOL),
              "embedded multi-object scenes, 1/2/5 img per class, 1 %, 10 % x 3 seeds + full, mAP"),
    TaskEntry("ade20k-seg", LowShotSegmentation, False, lambda o, s: ade20k_data(o.data_root),
              "ADE20K, 1 %, 5 %, 10 % x 3 seeds + full, linear head on patch tokens, mIoU on validation",
              folder="ADEChallengeData2016/ (images/, annotations/)", locate=_ade20k_folder),
    TaskEntry("voc12-seg", LowShotSegmentation, False, lambda o, s: voc12_data(o.data_root),
              "Pascal VOC 2012 (train_aug when present), 1 %, 5 %, 10 % x 3 seeds + full, linear head, mIoU on val",
              folder="VOCdevkit/VOC2012/ (JPEGImages/, ImageSets/, SegmentationClass/)", locate=_voc_folder("2012")),
    TaskEntry("embedded-seg", EmbeddedSegmentation, True, lambda o, s: embedded_seg(),
              "embedded scenes, 1 %, 5 %, 10 % x 3 seeds + full, linear head on patch tokens, mIoU",
              options={"train_pool": EMBEDDED_SCENE_POOL}),
    *[TaskEntry(d.task, protocol_of(d), False, lambda o, s, d=d: transfer_data(d, o.data_root),
                f"{d.title}, 1/2/4/8/16 img per class x 3 seeds + full, {d.metric} on {d.split}",
                folder=f"{d.folder}/ ({', '.join(d.markers)})",
                locate=lambda root, d=d: find_dataset_folder(root, d.title, [d.folder], d.markers))
      for d in TRANSFER_DATASETS.values()],
    TaskEntry("embedded-transfer", LowShotTransfer, True, lambda o, s: embedded_transfer(),
              "embedded texture / colour classes (a second synthetic domain), 1/2/4/8/16 img per class x 3 seeds "
              "+ full, top-1"),
]}

TASK_GROUPS: dict[str, list[str]] = {"transfer": [d.task for d in TRANSFER_DATASETS.values()]}


def get_task(name: str) -> TaskEntry:
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownNameError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def expand(names: list[str]) -> list[tuple[str, bool]]:
    """(task, asked for by name) for each task a --task list means, in order, once each: a group stands for its
    tasks (a member whose data is missing is skipped; a task asked for by name must have its data)."""
    out: dict[str, bool] = {}
    for name in names:
        for task in TASK_GROUPS.get(name, [name]):
            out[task] = out.get(task, False) or name not in TASK_GROUPS
    return list(out.items())


def declaration(name: str) -> TaskEntry | None:
    """The declaration of a registered task, or None (e.g. a record of a task this version does not know)."""
    return TASKS.get(name)


def embedded_tasks() -> list[str]:
    return [t.name for t in TASKS.values() if t.embedded]


def real_tasks() -> list[str]:
    return [t.name for t in TASKS.values() if not t.embedded]
