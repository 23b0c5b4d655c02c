"""Image folders → a local tfds dataset in array_record format that `--config.data.name=<name>` reads.

    prepared = folders.prepare("photos/", "my_faces", image_size=64)   # writes <data_dir>/my_faces/
    source = folders.open_records("my_faces")                          # len(source), source[i]["image"]

Input (`src`), ImageFolder convention:
- Labels: each first-level sub-folder of `src` is a class; class names are the sorted folder names and
  label = index in that list. Images may sit at any depth below their class folder. A `src` without
  sub-folders is an unlabelled dataset: its examples have an "image" feature and no "label".
- Files directly in `src` beside class folders: an image there has no class, so `prepare` refuses with a
  GanJaxError listing them; a non-image there is skipped like any other unreadable file.
- Hidden files and folders (name starting with ".", e.g. .DS_Store, .ipynb_checkpoints) are ignored.
- Examples are ordered by relative path, compared folder by folder (deterministic on every machine).
- Any file Pillow opens counts (PNG, JPEG, WebP, GIF, BMP, TIFF, ...; the first frame of an animation).
  Files Pillow cannot open or decode are skipped and listed with their reason; `strict=True` refuses instead.

Pixels:
- Channels are decided over the whole dataset: if every image is grayscale (modes 1, L, LA, I, I;16*, F)
  the dataset has C = 1, otherwise C = 3 (RGB) and grayscale images are replicated to three channels.
  16-bit grayscale (I;16*) is scaled by 255/65535 and rounded; I and F are clipped to 0..255 (Pillow's
  convert). Alpha and palette transparency are dropped: pixels keep their stored colour (what
  `Image.convert("RGB")` does, as torchvision's ImageFolder loader). CMYK, YCbCr, P, ... go through
  `Image.convert("RGB")`. EXIF orientation is ignored.
- Each image is centre-cropped to a square of its shorter side (offsets rounded down), then resized to
  S×S with Pillow's LANCZOS filter (`RESAMPLE`; antialiased when shrinking, as StyleGAN's dataset_tool).
  Without `image_size`, every image must already have the same size (S = its shorter side).
- Stored raw: uint8 (S, S, C) as `tfds.features.Tensor(encoding=BYTES)` (one bytes field; the default
  encoding would store every pixel as an int64 varint, ~1.5× the bytes and ~10× slower to parse), labels as
  `tfds.features.ClassLabel(names=...)`. Read back, images are read-only NumPy views of the record.

Storage, raw uint8 vs PNG bytes, both as tfds example protos in array_record files written like these
(zstd-compressed chunks of one record), for smooth random colour gradients and blobs + Gaussian noise
(σ = 4) RGB images; per image, best of 3 passes over 128 records, 2 shared CPU cores (Pillow 13):

    size   raw on disk   PNG on disk   raw read+decode   PNG read+decode (Pillow)
    64²     11.0 KiB       7.5 KiB         ~125 µs           ~500-660 µs
    256²   173.5 KiB     110.5 KiB         ~400 µs           ~1.75 ms

  (`python -c "from experiments.prepare_images import print_storage_comparison as p; p()"`). Raw is chosen:
  ~1.5× the bytes of PNG, but 4-5× faster to decode (raw's time is mostly tfds's per-record parsing), no
  image codec on the read path, and bit-exact by construction. The streamed pipeline decodes every record
  of every batch on the host (the device pipeline every record once per run), while disk is cheap.

Output layout (`<data_dir>/<name>/`, tfds's own layout plus a manifest):

    <name>/1.0.0/dataset_info.json, features.json, label.labels.txt, <name>-train.array_record-0000i-of-0000n
    <name>/gan_jax_prepared.json     # MANIFEST: shapes, classes, source, skipped files, every file's size

The dataset folder is written as `<data_dir>/.<name>.incomplete-<random>/` and renamed to `<name>` as the
very last step, so an interrupted run never leaves a folder that looks complete; the next `prepare` of the
same name removes such leftovers of dead processes on this host. `open_records` reads only folders with
a manifest, and checks every file against it (presence, size, record count) before opening.
Names are lower-case snake_case and are neither gan_jax's built-in datasets nor tfds's registered names,
so `--config.data.name=<name>` is unambiguous. No tfds builder class is defined (nothing is registered):
the files are written with ArrayRecordWriter and tfds's DatasetInfo and read with
`tfds.builder_from_directory`, so any number of `prepare` calls in one process never collide.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from PIL import Image, UnidentifiedImageError
from tensorflow_datasets.core import dataset_info as dataset_info_lib
from tensorflow_datasets.core import file_adapters, naming, splits
from tqdm import tqdm

from gan_jax.data import images as images_lib
from gan_jax.data import manifest, publish
from gan_jax.data.folder_checks import (check_classes, check_image_size, check_src, check_target, listing,
                                         no_images)
from gan_jax.errors import GanJaxError

VERSION = "1.0.0"
SPLIT = "train"
RESAMPLE = Image.Resampling.LANCZOS
RESAMPLE_NAME = "LANCZOS"
SHARD_BYTES = 256 * 2**20  # serialized examples per array_record file, at most (one example at least)
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_WRITER_OPTIONS = "group_size:1"  # one record per chunk: random access reads one example (as tfds writes)
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class Prepared(NamedTuple):
    """What `prepare` wrote: the dataset folder, its examples, classes, pixel shape and the skipped files."""

    path: str  # <data_dir>/<name>
    name: str
    num_examples: int
    class_names: tuple[str, ...]  # () for an unlabelled dataset (no "label" feature)
    shape: tuple[int, int, int]  # (H, W, C) of every stored image, H = W = S
    skipped: tuple[tuple[str, str], ...]  # (path relative to src, reason), sorted by path
    num_bytes: int  # all files of the dataset folder on disk

    @property
    def labelled(self) -> bool:
        """Whether the examples carry a "label" (src had class sub-folders)."""
        return bool(self.class_names)


class _Entry(NamedTuple):
    rel: str  # path relative to src, "/"-separated
    path: str
    label: int | None
    mode: str  # Pillow mode from the header
    size: tuple[int, int]  # (width, height) from the header


class _Plan(NamedTuple):
    size: int  # S
    channels: int  # C


def validate_name(name: Any) -> str:
    """`name` if it can name a prepared dataset (lower-case snake_case, not built in, not a tfds name)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise GanJaxError(
            f"dataset name {name!r} is invalid: use lower-case snake_case (a letter, then letters, digits or "
            "'_', at most 64 characters), e.g. 'my_faces'")
    from gan_jax.data import toy

    if name == images_lib.DIGITS or name in toy.names():
        raise GanJaxError(f"dataset name {name!r} is built into gan_jax: choose another name, e.g. '{name}_folder'")
    if name in tfds.list_builders(with_community_datasets=False):
        raise GanJaxError(f"dataset name {name!r} is a tensorflow-datasets dataset: choose another name, "
                          f"e.g. '{name}_folder', so --config.data.name is unambiguous")
    return name


def dataset_path(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """<data_dir>/<name>, with data_dir defaulting to `images.default_data_dir()`."""
    return os.path.join(_data_dir(data_dir), name)


def to_array(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """uint8 (size, size, channels): `image` converted to L or RGB, centre-cropped square, LANCZOS-resized."""
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.rint(wide * (255.0 / 65535.0)).astype(np.uint8))
    elif image.mode in GRAYSCALE_MODES:
        image = image.convert("L")
    else:
        image = image.convert("RGB")
    if channels == 3 and image.mode == "L":
        image = image.convert("RGB")
    elif channels == 1 and image.mode != "L":
        raise ValueError(f"a {image.mode} image cannot be stored with 1 channel")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), RESAMPLE)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(size, size, channels)


def prepare(
    src: str | os.PathLike,
    name: str,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    *,
    max_shard_bytes: int = SHARD_BYTES,
) -> Prepared:
    """Writes the images under `src` as dataset `name` in `data_dir` (see the module docstring); its summary.

    Args:
      src: the image folder (class sub-folders, or images directly for an unlabelled dataset).
      name: the dataset name `--config.data.name` will use (`validate_name`).
      data_dir: tfds data directory; default `images.default_data_dir()`; created if missing.
      image_size: S; images are centre-cropped and resized to S×S. None: all must share one size.
      strict: refuse (GanJaxError, nothing written) when any file cannot be read, instead of skipping it.
      overwrite: replace an existing dataset `name` written by `prepare` (never a folder it did not write).
      progress: show tqdm bars on stderr.
      max_shard_bytes: at most this many serialized bytes per array_record file (at least one example).

    Raises:
      GanJaxError: a bad argument, src, name or existing dataset; no readable image; images of different
        sizes without image_size; strict with unreadable files. The message names the problem and the fix.
      OSError: the file system failed while writing (disk full, ...); the unfinished folder is removed.
    """
    name = validate_name(name)
    image_size = check_image_size(image_size)
    src = check_src(src)
    data_dir = _data_dir(data_dir)
    target = os.path.join(data_dir, name)
    check_target(target, src, overwrite)
    class_names, entries, skipped = _scan(src, progress)
    if not entries:
        raise no_images(src, skipped)
    check_classes(src, class_names, entries)
    plan = _plan(entries, image_size)

    created: list[str] = []
    try:
        created = publish.make_dirs(data_dir)
        publish.remove_stale(data_dir, name)
        tmp = publish.make_temp(data_dir, name)
    except OSError as err:
        for folder in reversed(created):
            publish.rmdir_quietly(folder)
        raise GanJaxError(f"cannot write in --data_dir {data_dir} ({err.strerror}): choose a data directory you "
                          "can write to") from err
    try:
        while True:
            files, bad = _write_shards(tmp, name, entries, class_names, plan, progress, max_shard_bytes)
            if not bad:
                break
            skipped += bad
            failed = {rel for rel, _ in bad}
            entries = [e for e in entries if e.rel not in failed]
            if not entries:
                raise no_images(src, skipped)
            check_classes(src, class_names, entries)
            if _plan(entries, image_size) == plan:
                break
            # The failed files alone made the dataset RGB: write the rest again as grayscale.
            plan = _plan(entries, image_size)
            shutil.rmtree(os.path.join(tmp, VERSION))
        skipped.sort()
        if strict and skipped:
            raise GanJaxError(
                f"--strict: {len(skipped)} file(s) in {src} cannot be read ({listing(skipped)}); fix or remove "
                "them, or drop --strict to skip them. Nothing was written.")
        files += _write_metadata(tmp, name, src, class_names, plan, files)
        manifest.write(tmp, dict(name=name, version=VERSION, split=SPLIT, shape=[plan.size, plan.size, plan.channels],
                                 class_names=list(class_names), src=src, image_size=image_size,
                                 resample=RESAMPLE_NAME), files, skipped)
        publish.fsync_tree(tmp)
        publish.commit(tmp, target, overwrite, manifest.MANIFEST)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(created):
            publish.rmdir_quietly(folder)
        raise
    return Prepared(
        path=target, name=name, num_examples=len(entries), class_names=tuple(class_names),
        shape=(plan.size, plan.size, plan.channels), skipped=tuple(skipped), num_bytes=manifest.tree_bytes(target))


def open_records(name: str, data_dir: str | os.PathLike | None = None, split: str = SPLIT) -> Any | None:
    """tfds's random-access source of `split` of dataset `name` if `prepare` wrote it in data_dir, else None.

    `len(source)`; `source[i]` = {"image": uint8 (H, W, C), "label": int} ("label" only when labelled).
    `split` is "train" or a tfds slice of it ("train[:90%]"). Every file listed in the manifest is checked
    (exists, size, and for shards the record count) first: a damaged dataset raises GanJaxError naming the
    file and the command that rebuilds it.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        return None  # "digits", "mnist:3.*.*", ...: not a name `prepare` accepts
    path = dataset_path(name, data_dir)
    record = manifest.read(path)
    if record is None:
        return None
    manifest.verify(path, record)
    builder = tfds.builder_from_directory(os.path.join(path, record["version"]))
    return builder.as_data_source(split=split)


# --- paths (the checks of the inputs: gan_jax.data.folder_checks) ---------------------------------------


def _data_dir(data_dir: str | os.PathLike | None) -> str:
    """The absolute data directory: `data_dir`, else `images.default_data_dir()`."""
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir) if data_dir else images_lib.default_data_dir()))


# --- scanning -------------------------------------------------------------------------------------------


def _visible(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _scan(src: str, progress: bool) -> tuple[list[str], list[_Entry], list[tuple[str, str]]]:
    """Class names, the files Pillow opens (mode and size from their headers) and those it cannot open."""
    top = _visible(os.listdir(src))
    class_names = [n for n in top if os.path.isdir(os.path.join(src, n))]
    for n in class_names:
        if n != n.strip() or "\n" in n or "\r" in n:
            raise GanJaxError(f"class folder {n!r} in {src} has leading/trailing spaces or a line break, which "
                              "tfds's label file cannot keep: rename it")
    loose = [n for n in top if n not in class_names]
    files: list[tuple[str, int | None]] = [(n, None) for n in loose]
    for label, class_name in enumerate(class_names):
        for folder, dirs, names in os.walk(os.path.join(src, class_name)):
            dirs[:] = _visible(dirs)
            rel_folder = os.path.relpath(folder, src).replace(os.sep, "/")
            files += [(f"{rel_folder}/{n}", label) for n in _visible(names)]
    files.sort(key=lambda item: item[0].split("/"))

    entries, skipped, loose_images = [], [], []
    for rel, label in tqdm(files, desc="scan", unit="file", disable=not progress, leave=False):
        path = os.path.join(src, *rel.split("/"))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as image:
                    mode, size = image.mode, image.size
        except UnidentifiedImageError:
            skipped.append((rel, "not an image Pillow can read"))
            continue
        except Exception as err:  # any failure of a Pillow plugin on a bad file
            skipped.append((rel, f"cannot open: {type(err).__name__}: {err}"))
            continue
        if class_names and label is None:
            loose_images.append(rel)
        else:
            entries.append(_Entry(rel, path, label, mode, size))
    if loose_images:
        raise GanJaxError(
            f"--src {src} has {len(loose_images)} image(s) directly in it beside its class folders "
            f"({', '.join(loose_images[:5])}{', ...' if len(loose_images) > 5 else ''}), which would have no "
            "label: move them into a class folder, or all images into one folder for an unlabelled dataset")
    return class_names, entries, skipped


def _plan(entries: Sequence[_Entry], image_size: int | None) -> _Plan:
    """S and C from the headers: C = 1 when every image is grayscale; S = image_size or the common size."""
    channels = 1 if all(e.mode in GRAYSCALE_MODES for e in entries) else 3
    if image_size is not None:
        return _Plan(image_size, channels)
    by_size: dict[tuple[int, int], str] = {}
    for e in entries:
        by_size.setdefault(e.size, e.rel)
    if len(by_size) > 1:
        examples = ", ".join(f"{w}x{h} ({rel})" for (w, h), rel in list(by_size.items())[:3])
        raise GanJaxError(f"the images have {len(by_size)} different sizes, e.g. {examples}: pass --image_size=S "
                          "(image_size=S) to centre-crop and resize them all to SxS")
    (width, height), = by_size
    return _Plan(min(width, height), channels)


# --- writing --------------------------------------------------------------------------------------------


def _features(class_names: Sequence[str], plan: _Plan) -> tfds.features.FeaturesDict:
    features: dict[str, Any] = {
        "image": tfds.features.Tensor(shape=(plan.size, plan.size, plan.channels), dtype=np.uint8,
                                      encoding=tfds.features.Encoding.BYTES)}
    if class_names:
        features["label"] = tfds.features.ClassLabel(names=list(class_names))
    return tfds.features.FeaturesDict(features)


def _template(version_dir: str, name: str) -> naming.ShardedFileTemplate:
    return naming.ShardedFileTemplate(
        data_dir=version_dir, template=naming.DEFAULT_FILENAME_TEMPLATE, dataset_name=name, split=SPLIT,
        filetype_suffix=file_adapters.FileFormat.ARRAY_RECORD.file_suffix)


def _decode(path: str, plan: _Plan) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette transparency, EXIF and large-image notes
        with Image.open(path) as image:
            image.load()
            return to_array(image, plan.size, plan.channels)


def _write_shards(tmp: str, name: str, entries: Sequence[_Entry], class_names: Sequence[str], plan: _Plan,
                  progress: bool, max_shard_bytes: int) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Writes the examples into <tmp>/<VERSION>/ shards; ({file, num_records, num_bytes} per shard, failures)."""
    version_dir = os.path.join(tmp, VERSION)
    os.makedirs(version_dir)
    features = _features(class_names, plan)
    parts: list[tuple[str, int]] = []
    bad: list[tuple[str, str]] = []
    writer, count, written_bytes = None, 0, 0
    bar = tqdm(total=len(entries), desc="write", unit="img", disable=not progress, leave=False)
    try:
        for entry in entries:
            bar.update(1)
            try:
                pixels = _decode(entry.path, plan)
            except Exception as err:  # a truncated or otherwise broken file whose header was fine
                bad.append((entry.rel, f"cannot decode: {type(err).__name__}: {err}"))
                continue
            example = {"image": pixels} if entry.label is None else {"image": pixels, "label": entry.label}
            record = features.serialize_example(example)
            if writer is None or (count and written_bytes + len(record) > max_shard_bytes):
                if writer is not None:
                    writer.close()
                    parts[-1] = (parts[-1][0], count)
                parts.append((os.path.join(version_dir, f"part-{len(parts):05d}.tmp"), 0))
                writer = array_record_module.ArrayRecordWriter(parts[-1][0], _WRITER_OPTIONS)
                count, written_bytes = 0, 0
            writer.write(record)
            count, written_bytes = count + 1, written_bytes + len(record)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if parts:
        parts[-1] = (parts[-1][0], count)
    template = _template(version_dir, name)
    files = []
    for index, (part, records) in enumerate(parts):
        final = os.fspath(template.sharded_filepath(shard_index=index, num_shards=len(parts)))
        os.rename(part, final)
        files.append({"file": os.path.relpath(final, tmp), "num_records": records,
                      "num_bytes": os.path.getsize(final)})
    return files, bad


def _write_metadata(tmp: str, name: str, src: str, class_names: Sequence[str], plan: _Plan,
                    shards: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """tfds's dataset_info.json, features.json (and label names) beside the shards; their file entries."""
    version_dir = os.path.join(tmp, VERSION)
    identity = dataset_info_lib.DatasetIdentity(
        name=name, version=tfds.core.Version(VERSION), data_dir=version_dir, module_name="")
    info = tfds.core.DatasetInfo(
        builder=identity, features=_features(class_names, plan),
        description=(f"Images from {src}, centre-cropped and resized to {plan.size}x{plan.size} with Pillow "
                     f"{RESAMPLE_NAME}, {plan.channels} channel(s), by gan_jax's prepare_images."),
        supervised_keys=("image", "label") if class_names else None,
        disable_shuffling=True)
    info.set_file_format(file_adapters.FileFormat.ARRAY_RECORD)
    info.set_splits(splits.SplitDict([splits.SplitInfo(
        name=SPLIT, shard_lengths=[s["num_records"] for s in shards],
        num_bytes=sum(s["num_bytes"] for s in shards), filename_template=_template(version_dir, name))]))
    before = set(os.listdir(version_dir))
    info.write_to_directory(version_dir)
    return [{"file": os.path.join(VERSION, f), "num_bytes": os.path.getsize(os.path.join(version_dir, f))}
            for f in sorted(set(os.listdir(version_dir)) - before)]
