r"""Image folder → a dataset `experiments.train` reads by name: `python -m experiments.prepare_images`.

    python -m experiments.prepare_images --src=~/photos --name=my_faces --image_size=64
    python -m experiments.prepare_images --src=~/photos --name=my_faces --image_size=64 --overwrite --strict

One sub-folder of --src per class (or the images directly in --src for an unlabelled dataset); every image is
centre-cropped to a square and resized to --image_size with Pillow's LANCZOS filter, and the dataset is written
to <data_dir>/<name>/ in array_record format (gan_jax.data.folders). On success it prints the dataset's path,
size, classes, shape, the skipped files and the command to train on it. Any bad input gives one
`gan_jax: error: ...` line on stderr and exit code 2, with nothing written.

Storage comparison (raw uint8 records vs PNG-encoded records), printed as a table:

    python -c "from experiments.prepare_images import print_storage_comparison as p; p()"
"""

from __future__ import annotations

import io
import os
import shlex
import signal
import sys
import tempfile
import time
from typing import Any

from absl import app, flags, logging

# The config experiments.train is pointed at in the printed command (a config reading config.data.name).
TRAIN_CONFIG = "experiments/configs/folder_gan.py"
_LIST_LIMIT = 20

_SRC = flags.DEFINE_string("src", None, "Folder of images: one sub-folder per class, or the images themselves.")
_NAME = flags.DEFINE_string("name", None, "Dataset name for --config.data.name (lower-case snake_case).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Centre-crop and resize every image to SxS; unset: all "
                                   "images must share one size.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data directory (default: $GAN_JAX_DATA_DIR, else "
                                "~/.cache/gan_jax/tensorflow_datasets).")
_STRICT = flags.DEFINE_bool("strict", False, "Refuse (write nothing) if any file cannot be read, instead of "
                            "skipping it.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing dataset of this name.")


def _error_exit(message: str) -> None:
    """One `gan_jax: error:` line on stderr, exit code 2."""
    print(f"gan_jax: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with any failure (unknown flag, non-integer value) as one error line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        _error_exit(f"{err}; see --helpfull")
    return []


def _human_bytes(n: int) -> str:
    """n bytes as "12.3 MiB"."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def train_command(name: str, data_dir: str) -> str:
    """The `experiments.train` command line that trains on dataset `name` of `data_dir`."""
    return (f"python -m experiments.train --config={TRAIN_CONFIG} --config.data.name={name} "
            f"--config.data.data_dir={shlex.quote(data_dir)}")


def report(prepared: Any) -> str:
    """The success report of a `folders.Prepared`: path, size, classes, shape, skipped files, train command."""
    height, width, channels = prepared.shape
    classes = (f"{len(prepared.class_names)} classes: {', '.join(prepared.class_names[:_LIST_LIMIT])}"
               + (", ..." if len(prepared.class_names) > _LIST_LIMIT else "")
               if prepared.class_names else "unlabelled (no class folders)")
    lines = [
        f"prepared dataset {prepared.name!r} at {prepared.path}",
        f"  {prepared.num_examples} images, {height}x{width}x{channels} ({'RGB' if channels == 3 else 'grayscale'}), "
        f"{classes}",
        f"  {_human_bytes(prepared.num_bytes)} on disk ({prepared.num_bytes} bytes)",
        f"  skipped {len(prepared.skipped)} file(s)" + (":" if prepared.skipped else ""),
    ]
    lines += [f"    {rel}: {reason}" for rel, reason in prepared.skipped[:_LIST_LIMIT]]
    if len(prepared.skipped) > _LIST_LIMIT:
        lines.append(f"    ... and {len(prepared.skipped) - _LIST_LIMIT} more, all listed in "
                     f"{os.path.join(prepared.path, 'gan_jax_prepared.json')}")
    lines += ["train on it with:", f"  {train_command(prepared.name, os.path.dirname(prepared.path))}"]
    return "\n".join(lines)


def _interrupt(signum: int, frame: Any) -> None:
    del frame
    raise KeyboardInterrupt(signum)


def main(argv: list[str]) -> None:
    """Prepares --src as dataset --name and prints the report; one error line and exit 2 on bad input."""
    if len(argv) > 1:
        _error_exit(f"unexpected argument(s) {' '.join(map(repr, argv[1:]))}: pass everything as flags, "
                    "e.g. --src=DIR --name=NAME")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if not _SRC.value:
        _error_exit("--src is required: the folder of images (one sub-folder per class, or the images themselves)")
    if not _NAME.value:
        _error_exit("--name is required: the dataset name --config.data.name will use, e.g. --name=my_faces")
    if _IMAGE_SIZE.value is not None and _IMAGE_SIZE.value < 1:
        _error_exit(f"--image_size={_IMAGE_SIZE.value} is invalid: give a positive size such as --image_size=64, "
                    "or leave it unset when all images share one size")
    from gan_jax.data import folders  # imports jax and tfds: after the cheap checks

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up like Ctrl-C
    try:
        prepared = folders.prepare(_SRC.value, _NAME.value, data_dir=_DATA_DIR.value, image_size=_IMAGE_SIZE.value,
                                   strict=_STRICT.value, overwrite=_OVERWRITE.value)
    except KeyboardInterrupt as err:
        signum = err.args[0] if err.args else signal.SIGINT
        print("gan_jax: interrupted: no dataset was written (the unfinished folder was removed).", file=sys.stderr)
        sys.exit(128 + signum)
    except ValueError as err:
        _error_exit(str(err))
    except OSError as err:  # disk full, permissions, ...
        _error_exit(f"{err}: nothing was written; free space or fix the permissions and rerun")
    print(report(prepared))


# --- raw uint8 vs PNG storage -------------------------------------------------------------------------------


def natural_image(size: int, seed: int = 0, noise: float = 4.0) -> Any:
    """uint8 (size, size, 3): a few smooth random colour gradients and blobs plus Gaussian noise of std `noise`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:1:size * 1j, 0:1:size * 1j]
    image = np.zeros((size, size, 3))
    for channel in range(3):
        a, b, c = rng.uniform(-1, 1, 3)
        image[..., channel] = 128 + 60 * (a * x + b * y) + 40 * np.sin(2 * np.pi * (c * x + rng.uniform(0.5, 2) * y))
        for _ in range(3):
            cx, cy, r = rng.uniform(0, 1, 3)
            image[..., channel] += rng.uniform(-50, 50) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (0.02 + 0.1 * r))
    image += rng.normal(0, noise, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def compare_storage(sizes: tuple[int, ...] = (64, 256), n: int = 128, repeats: int = 3) -> list[dict[str, float]]:
    """Per image: bytes on disk and decode seconds of raw uint8 vs PNG records in array_record files, per size.

    Both are written as `folders.prepare` writes (tfds example protos, ArrayRecordWriter "group_size:1", zstd
    chunks); PNG is Pillow's default (compress_level 6). Bytes: the growth of the file from n to 2n records,
    per record (leaves out the fixed per-file overhead). Decode: read one record, parse it (+ decode the
    PNG) to a uint8 array; the best of `repeats` passes over n records, per record.
    """
    import numpy as np
    import tensorflow_datasets as tfds
    from array_record.python import array_record_module
    from PIL import Image

    def encode_png(picture: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        return buffer.getvalue()

    def write(path: str, records: list[bytes]) -> int:
        writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
        for record in records:
            writer.write(record)
        writer.close()
        return os.path.getsize(path)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            pictures = [natural_image(size, seed) for seed in range(2 * n)]
            raw = tfds.features.FeaturesDict({"image": tfds.features.Tensor(
                shape=(size, size, 3), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES)})
            png = tfds.features.FeaturesDict({"png": tfds.features.Tensor(shape=(), dtype=np.object_)})
            variants = {
                "raw": (raw, [raw.serialize_example({"image": p}) for p in pictures], lambda ex: ex["image"]),
                "png": (png, [png.serialize_example({"png": encode_png(p)}) for p in pictures],
                        lambda ex: np.asarray(Image.open(io.BytesIO(ex["png"])).convert("RGB"))),
            }
            row: dict[str, float] = {"size": size}
            for kind, (features, records, finish) in variants.items():
                path = os.path.join(tmp, f"{kind}{size}.array_record")
                half = write(path + ".half", records[:n])
                row[f"{kind}_bytes"] = (write(path, records) - half) / n
                reader = array_record_module.ArrayRecordReader(path)
                best = float("inf")
                for _ in range(repeats):
                    start = time.perf_counter()
                    for i in range(n):
                        decoded = finish(features.deserialize_example_np(reader.read([i])[0]))
                    best = min(best, (time.perf_counter() - start) / n)
                reader.close()
                assert np.array_equal(decoded, pictures[n - 1])  # both lossless
                row[f"{kind}_decode_s"] = best
            rows.append(row)
    return rows


def print_storage_comparison(sizes: tuple[int, ...] = (64, 256), n: int = 128) -> None:
    """Prints `compare_storage` as a table (KiB and microseconds per image)."""
    print("size   raw KiB/img   PNG KiB/img   raw decode us   PNG decode us")
    for row in compare_storage(sizes, n):
        print(f"{int(row['size']):4d}   {row['raw_bytes'] / 1024:11.1f}   {row['png_bytes'] / 1024:11.1f}   "
              f"{row['raw_decode_s'] * 1e6:13.0f}   {row['png_decode_s'] * 1e6:13.0f}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
