"""The manifest of a dataset prepared from an image folder (`<data_dir>/<name>/gan_jax_prepared.json`): shapes,
classes, source, skipped files and every file's size and record count, written last and checked before reading.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from typing import Any

from array_record.python import array_record_module

from gan_jax.errors import GanJaxError

MANIFEST = "gan_jax_prepared.json"
FORMAT = "gan_jax.folders"
FORMAT_VERSION = 1
_PREPARE_CLI = "python -m experiments.prepare_images"


def write(folder: str, fields: dict[str, Any], files: Sequence[dict[str, Any]],
          skipped: Sequence[tuple[str, str]]) -> None:
    """<folder>/MANIFEST: the format, `fields` (name, version, split, shape, classes, source, ...), the number of
    examples, every file with its size (and record count for shards), the skipped source files, and who wrote it."""
    from gan_jax import __version__

    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION, **fields,
        "num_examples": sum(f.get("num_records", 0) for f in files),
        "created": datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "created_by": f"gan_jax {__version__}", "files": list(files),
        "skipped": [{"file": rel, "reason": reason} for rel, reason in skipped],
    }
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, ensure_ascii=False)
        f.write("\n")


def tree_bytes(root: str) -> int:
    """Bytes of every file under `root`."""
    return sum(os.path.getsize(os.path.join(folder, n)) for folder, _, names in os.walk(root) for n in names)


def rebuild_hint(path: str, manifest: dict[str, Any] | None) -> str:
    name, data_dir = os.path.basename(path), os.path.dirname(path)
    src = (manifest or {}).get("src", "<image folder>")
    return f"rerun `{_PREPARE_CLI} --src={src} --name={name} --data_dir={data_dir} --overwrite`"


def read(path: str) -> dict[str, Any] | None:
    """The manifest of dataset folder `path`; None when there is none (not written by `prepare`)."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        return None
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r} is not {FORMAT!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {manifest.get('format_version')!r} is not {FORMAT_VERSION}")
        for item in manifest["files"]:
            if not isinstance(item["file"], str) or not isinstance(item["num_bytes"], int):
                raise TypeError(f"file entry {item!r} lacks a path or a byte count")
        if not isinstance(manifest["version"], str):
            raise TypeError(f"version {manifest['version']!r} is not a string")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise GanJaxError(f"{manifest_path} is damaged ({type(err).__name__}: {err}): "
                          f"{rebuild_hint(path, None)}") from None
    return manifest


def verify(path: str, manifest: dict[str, Any]) -> None:
    """GanJaxError naming the first file of the manifest that is missing, resized or short of records."""
    for item in manifest["files"]:
        file = os.path.join(path, item["file"])
        problem = None
        if not os.path.isfile(file):
            problem = "is missing"
        elif os.path.getsize(file) != item["num_bytes"]:
            problem = f"has {os.path.getsize(file)} bytes, not the {item['num_bytes']} written (truncated or changed)"
        elif "num_records" in item:
            reader = array_record_module.ArrayRecordReader(file)
            try:
                records = reader.num_records()
            finally:
                reader.close()
            if records != item["num_records"]:
                problem = f"holds {records} records, not the {item['num_records']} written"
        if problem:
            raise GanJaxError(f"dataset {manifest['name']!r}: {file} {problem}; the dataset is damaged: "
                              f"{rebuild_hint(path, manifest)}")
