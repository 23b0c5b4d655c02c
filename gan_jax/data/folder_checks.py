"""What `gan_jax.data.folders.prepare` refuses, each as one `GanJaxError` naming the fix: an invalid image size,
a missing or non-folder source, a target that is a file, lies around the source, or holds a dataset (without
overwrite) or anything prepare did not write, class folders without a readable image, a source without images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from gan_jax.data import manifest
from gan_jax.errors import GanJaxError

MAX_IMAGE_SIZE = 8192


def check_image_size(image_size: Any) -> int | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or not (
            1 <= image_size <= MAX_IMAGE_SIZE):
        raise GanJaxError(f"image_size={image_size!r} is invalid: give an integer from 1 to {MAX_IMAGE_SIZE} "
                          "(--image_size=64), or leave it unset when all images share one size")
    return int(image_size)


def check_src(src: str | os.PathLike) -> str:
    path = os.path.abspath(os.path.expanduser(os.fspath(src)))
    if not os.path.exists(path):
        raise GanJaxError(f"--src {path} does not exist: give the folder that holds the images "
                          "(one sub-folder per class, or the images themselves)")
    if not os.path.isdir(path):
        raise GanJaxError(f"--src {path} is a file, not a folder: give the folder that holds the images "
                          "(e.g. its parent folder)")
    return path


def check_target(target: str, src: str, overwrite: bool) -> None:
    """Refuses a data_dir that is a file, an existing dataset without overwrite, and folders not ours."""
    data_dir = os.path.dirname(target)
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise GanJaxError(f"--data_dir {data_dir} is a file, not a folder: choose another data directory")
    if os.path.commonpath([target, src]) == target:
        raise GanJaxError(f"--src {src} lies inside the dataset folder {target}: move the images elsewhere or "
                          "choose another --name")
    if not os.path.lexists(target):
        return
    if not os.path.isdir(target):
        raise GanJaxError(f"{target} exists and is a file: choose another --name, or move the file away")
    if os.path.isfile(os.path.join(target, manifest.MANIFEST)):
        if not overwrite:
            raise GanJaxError(f"dataset {os.path.basename(target)!r} already exists at {target}: pass --overwrite "
                              "(overwrite=True) to replace it, or choose another --name")
        return
    if os.listdir(target):
        raise GanJaxError(
            f"{target} exists and was not written by prepare_images (it has no {manifest.MANIFEST}; perhaps a "
            "tensorflow-datasets download): choose another --name, or move that folder away yourself")


def check_classes(src: str, class_names: Sequence[str], entries: Sequence[Any]) -> None:
    """Refuses class folders without a readable image (their label would never occur)."""
    counts = np.bincount([e.label for e in entries], minlength=len(class_names)) if class_names else []
    empty = [class_names[i] for i, count in enumerate(counts) if count == 0]
    if empty:
        raise GanJaxError(f"class folder(s) {', '.join(map(repr, empty))} in {src} hold no readable image: "
                          "add images to them or remove them")


def no_images(src: str, skipped: Sequence[tuple[str, str]]) -> GanJaxError:
    if not skipped:
        return GanJaxError(f"--src {src} is empty: put the images in it (one sub-folder per class, or the images "
                           "directly for an unlabelled dataset)")
    return GanJaxError(f"--src {src} holds no image Pillow can read ({len(skipped)} file(s) skipped: "
                       f"{listing(skipped)}): point --src at the folder of images")


def listing(skipped: Sequence[tuple[str, str]], limit: int = 5) -> str:
    shown = "; ".join(f"{rel}: {reason}" for rel, reason in skipped[:limit])
    return shown + (f"; ... and {len(skipped) - limit} more" if len(skipped) > limit else "")
