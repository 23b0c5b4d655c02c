"""Image folders → array_record datasets (gan_jax.data.folders) and the `experiments.prepare_images` CLI.

Real files everywhere: image trees written with Pillow, datasets read back through tfds, shards damaged on
disk, the CLI and interrupted runs in real subprocesses. Pixel references are computed here, independently.
"""

import hashlib
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gan_jax.data import folders

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- helpers --------------------------------------------------------------------------------------------


def _smooth(height, width, channels, seed):
    """uint8 (height, width, channels) gradients + noise: images JPEG/WebP keep recognisable."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:1:height * 1j, 0:1:width * 1j]
    planes = [255 * (rng.uniform() * x + rng.uniform() * y) / 2 + rng.normal(0, 10, x.shape) for _ in range(channels)]
    return np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)


def _save(path, image, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kwargs)
    return path


def _png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _reference(path, size, mode):
    """The expected stored pixels, computed independently: convert, centre crop by slicing, LANCZOS resize."""
    with Image.open(path) as image:
        if image.mode.startswith("I;16"):
            pixels = np.rint(np.asarray(image).astype(np.float64) * 255 / 65535).astype(np.uint8)
            image = Image.fromarray(pixels).convert(mode)
        else:
            image = image.convert(mode)
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(np.ascontiguousarray(pixels[top:top + side, left:left + side]))
    resized = np.asarray(square.resize((size, size), Image.Resampling.LANCZOS))
    return resized.reshape(size, size, 1 if mode == "L" else 3)


def _tree(tmp_path):
    """Three class folders of mixed sizes, modes and formats, one truncated PNG, one text file, a hidden file."""
    src = tmp_path / "src"
    files = {
        "cat/a_rgb.png": Image.fromarray(_smooth(12, 20, 3, 1)),
        "cat/b_rgba.png": Image.fromarray(_smooth(16, 16, 4, 2), "RGBA"),
        "cat/c_palette.png": Image.fromarray(_smooth(15, 9, 3, 3)).convert("P"),
        "dog/deep/er/d_rgb.jpg": Image.fromarray(_smooth(25, 40, 3, 4)),
        "dog/e_gray.jpg": Image.fromarray(_smooth(30, 30, 1, 5)[..., 0]),
        "dog/f_rgb.webp": Image.fromarray(_smooth(23, 17, 3, 6)),
        "fox/g_gray.png": Image.fromarray(_smooth(8, 8, 1, 7)[..., 0]),
        "fox/h_rgba.webp": Image.fromarray(_smooth(19, 11, 4, 8), "RGBA"),
    }
    for rel, image in files.items():
        _save(str(src / rel), image)
    truncated = _png_bytes(Image.fromarray(_smooth(20, 20, 3, 9)))
    (src / "dog" / "broken.png").write_bytes(truncated[: len(truncated) // 2])
    (src / "cat" / "notes.txt").write_text("not an image\n")
    (src / "fox" / ".DS_Store").write_bytes(b"\x00\x01junk")
    return src, sorted(files)


def _tree_digest(root):
    digests = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def _examples(source):
    return [source[i] for i in range(len(source))]


# --- library --------------------------------------------------------------------------------------------


def test_mixed_tree_is_stored_as_the_independent_pil_reference(tmp_path):
    src, good = _tree(tmp_path)
    data_dir = tmp_path / "data"
    prepared = folders.prepare(src, "my_faces", data_dir=data_dir, image_size=8, progress=False)

    assert prepared.path == str(data_dir / "my_faces")
    assert prepared.num_examples == len(good) == 8
    assert prepared.class_names == ("cat", "dog", "fox") and prepared.labelled
    assert prepared.shape == (8, 8, 3)
    assert [rel for rel, _ in prepared.skipped] == ["cat/notes.txt", "dog/broken.png"]
    assert "not an image" in prepared.skipped[0][1] and "truncated" in prepared.skipped[1][1]
    assert prepared.num_bytes == sum(os.path.getsize(os.path.join(d, n))
                                     for d, _, names in os.walk(prepared.path) for n in names)

    # Read back twice: through open_records and directly with tfds, no gan_jax code involved.
    direct = tfds.builder_from_directory(os.path.join(prepared.path, "1.0.0"))
    assert direct.info.features["label"].names == ["cat", "dog", "fox"]
    for source in (folders.open_records("my_faces", data_dir), direct.as_data_source("train")):
        examples = _examples(source)
        assert len(examples) == 8
        for rel, example in zip(good, examples):  # sorted relative paths
            assert example["label"] == ["cat", "dog", "fox"].index(rel.split("/")[0]), rel
            assert example["image"].dtype == np.uint8 and example["image"].shape == (8, 8, 3)
            np.testing.assert_array_equal(example["image"], _reference(src / rel, 8, "RGB"), err_msg=rel)


def test_unlabelled_folder_has_images_and_no_labels(tmp_path):
    src = tmp_path / "flat"
    names = ["x.png", "y.jpg", "z.webp"]
    for i, name in enumerate(names):
        _save(str(src / name), Image.fromarray(_smooth(10 + i, 14, 3, i)))
    prepared = folders.prepare(src, "flat_faces", data_dir=tmp_path / "d", image_size=6, progress=False)
    assert prepared.class_names == () and not prepared.labelled and prepared.shape == (6, 6, 3)
    builder = tfds.builder_from_directory(os.path.join(prepared.path, "1.0.0"))
    assert set(builder.info.features) == {"image"}
    examples = _examples(folders.open_records("flat_faces", tmp_path / "d"))
    assert [set(e) for e in examples] == [{"image"}] * 3
    for name, example in zip(names, examples):
        np.testing.assert_array_equal(example["image"], _reference(src / name, 6, "RGB"))


def test_grayscale_only_folder_is_stored_with_one_channel(tmp_path):
    src = tmp_path / "gray"
    sixteen = (np.arange(12 * 9).reshape(12, 9) * 601).astype(np.uint16)
    _save(str(src / "a" / "l.png"), Image.fromarray(_smooth(9, 13, 1, 1)[..., 0]))
    _save(str(src / "a" / "one_bit.png"), Image.fromarray(_smooth(10, 10, 1, 2)[..., 0] > 128))
    _save(str(src / "b" / "sixteen.png"), Image.fromarray(sixteen))
    _save(str(src / "b" / "l.jpg"), Image.fromarray(_smooth(14, 11, 1, 3)[..., 0]))
    with Image.open(src / "b" / "sixteen.png") as image:
        assert image.mode == "I;16"
    with Image.open(src / "a" / "one_bit.png") as image:
        assert image.mode == "1"
    prepared = folders.prepare(src, "gray_faces", data_dir=tmp_path / "d", image_size=7, progress=False)
    assert prepared.shape == (7, 7, 1) and prepared.skipped == ()
    examples = _examples(folders.open_records("gray_faces", tmp_path / "d"))
    for rel, example in zip(["a/l.png", "a/one_bit.png", "b/l.jpg", "b/sixteen.png"], examples):
        np.testing.assert_array_equal(example["image"], _reference(src / rel, 7, "L"), err_msg=rel)


def test_without_image_size_images_must_share_a_size(tmp_path):
    src = tmp_path / "same"
    for i in range(2):
        _save(str(src / f"{i}.png"), Image.fromarray(_smooth(10, 12, 3, i)))
    prepared = folders.prepare(src, "same_size", data_dir=tmp_path / "d", progress=False)
    assert prepared.shape == (10, 10, 3)  # the common 12x10 size, centre-cropped to its shorter side
    first = folders.open_records("same_size", tmp_path / "d")[0]["image"]
    np.testing.assert_array_equal(first, np.asarray(Image.open(src / "0.png"))[:, 1:11])

    _save(str(src / "2.png"), Image.fromarray(_smooth(16, 16, 3, 2)))
    with pytest.raises(ValueError, match=r"2 different sizes.*--image_size"):
        folders.prepare(src, "mixed_size", data_dir=tmp_path / "d", progress=False)
    assert not os.path.exists(tmp_path / "d" / "mixed_size")


def test_strict_refuses_and_writes_nothing(tmp_path):
    src, _ = _tree(tmp_path)
    data_dir = tmp_path / "not_yet" / "data"
    with pytest.raises(ValueError, match=r"--strict: 2 file\(s\).*cat/notes.txt.*dog/broken.png"):
        folders.prepare(src, "my_faces", data_dir=data_dir, image_size=8, strict=True, progress=False)
    assert not os.path.exists(tmp_path / "not_yet")  # not even the data directory it would have created


def test_existing_dataset_is_replaced_only_with_overwrite(tmp_path):
    src, _ = _tree(tmp_path)
    data_dir = tmp_path / "data"
    first = folders.prepare(src, "my_faces", data_dir=data_dir, image_size=8, progress=False)
    before = _tree_digest(first.path)
    with pytest.raises(ValueError, match=rf"{first.path}.*--overwrite"):
        folders.prepare(src, "my_faces", data_dir=data_dir, image_size=4, progress=False)
    assert _tree_digest(first.path) == before

    second = folders.prepare(src, "my_faces", data_dir=data_dir, image_size=4, overwrite=True, progress=False)
    assert second.shape == (4, 4, 3)
    assert folders.open_records("my_faces", data_dir)[0]["image"].shape == (4, 4, 3)
    assert sorted(os.listdir(data_dir)) == ["my_faces"]  # no temporary or set-aside folder left


def test_folders_not_written_by_prepare_are_never_replaced(tmp_path):
    src, _ = _tree(tmp_path)
    foreign = tmp_path / "data" / "my_faces" / "3.0.1"
    foreign.mkdir(parents=True)
    (foreign / "dataset_info.json").write_text("{}")
    with pytest.raises(ValueError, match="not written by prepare_images"):
        folders.prepare(src, "my_faces", data_dir=tmp_path / "data", image_size=8, overwrite=True, progress=False)
    assert os.listdir(foreign) == ["dataset_info.json"]
    assert folders.open_records("my_faces", tmp_path / "data") is None  # not ours: left to tfds


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("file", "is a file, not a folder"),
    ("empty", "is empty"),
    ("no_images", "holds no image Pillow can read"),
    ("loose_image", "directly in it beside its class folders"),
    ("empty_class", "'b' in"),
])
def test_bad_sources_are_refused_with_the_fix(tmp_path, case, message):
    src = tmp_path / "src"
    if case == "file":
        src.write_text("x")
    elif case != "missing":
        src.mkdir()
    if case == "no_images":
        (src / "a.txt").write_text("text")
        (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    if case == "loose_image":
        _save(str(src / "cls" / "a.png"), Image.fromarray(_smooth(4, 4, 3, 0)))
        _save(str(src / "stray.png"), Image.fromarray(_smooth(4, 4, 3, 1)))
    if case == "empty_class":
        _save(str(src / "a" / "x.png"), Image.fromarray(_smooth(4, 4, 3, 0)))
        (src / "b").mkdir()
        (src / "b" / "bad.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match=message):
        folders.prepare(src, "faces", data_dir=tmp_path / "data", image_size=4, progress=False)
    assert not os.path.exists(tmp_path / "data")


def test_non_images_beside_class_folders_are_skipped(tmp_path):
    src = tmp_path / "src"
    _save(str(src / "cls" / "a.png"), Image.fromarray(_smooth(4, 4, 3, 0)))
    (src / "README.txt").write_text("about these images")
    prepared = folders.prepare(src, "faces", data_dir=tmp_path / "data", progress=False)
    assert prepared.num_examples == 1 and prepared.skipped == (("README.txt", "not an image Pillow can read"),)


@pytest.mark.parametrize("name", ["", "My_Faces", "my/faces", "my-faces", "1faces", "../x", "digits", "ring8",
                                  "mnist", "x" * 65])
def test_bad_names_are_refused(tmp_path, name):
    src, _ = _tree(tmp_path)
    with pytest.raises(ValueError, match="choose another name|is invalid"):
        folders.prepare(src, name, data_dir=tmp_path / "data", image_size=8, progress=False)
    assert not os.path.exists(tmp_path / "data")
    assert folders.open_records(name, tmp_path / "data") is None


@pytest.mark.parametrize("image_size", [0, -3, 2.5, True, "8", 10**6])
def test_bad_image_sizes_are_refused(tmp_path, image_size):
    src, _ = _tree(tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        folders.prepare(src, "faces", data_dir=tmp_path / "data", image_size=image_size, progress=False)


def test_shards_keep_order_and_damage_is_detected_on_open(tmp_path):
    src, good = _tree(tmp_path)
    data_dir = tmp_path / "data"
    single = folders.prepare(src, "one_shard", data_dir=data_dir, image_size=8, progress=False)
    several = folders.prepare(src, "eight_shards", data_dir=data_dir, image_size=8, progress=False,
                              max_shard_bytes=1)  # one example per shard
    shards = sorted(f for f in os.listdir(os.path.join(several.path, "1.0.0")) if ".array_record-" in f)
    assert len(shards) == len(good) == 8 and shards[0] == "eight_shards-train.array_record-00000-of-00008"
    one, many = (_examples(folders.open_records(n, data_dir)) for n in ("one_shard", "eight_shards"))
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        assert a["label"] == b["label"]
    assert len(folders.open_records("one_shard", data_dir, split="train[:50%]")) == 4

    shard = os.path.join(single.path, "1.0.0", "one_shard-train.array_record-00000-of-00001")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    with pytest.raises(ValueError, match=rf"{shard} has .* bytes.*rerun .*prepare_images.*--overwrite"):
        folders.open_records("one_shard", data_dir)
    os.remove(os.path.join(several.path, "1.0.0", shards[3]))
    with pytest.raises(ValueError, match=rf"{shards[3]} is missing.*--overwrite"):
        folders.open_records("eight_shards", data_dir)
    assert folders.open_records("never_prepared", data_dir) is None


# --- interruption (real subprocesses) ----------------------------------------------------------------------


def _slow_tree(tmp_path, count=500):
    """`count` copies of one 384x384 JPEG: decoding and resizing them takes seconds."""
    src = tmp_path / "slow"
    src.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(_smooth(384, 384, 3, 0)).save(buffer, format="JPEG")
    for i in range(count):
        (src / f"{i:04d}.jpg").write_bytes(buffer.getvalue())
    return src


def _wait_for_shard(process, data_dir, name, timeout=120):
    """Polls until the run has an unfinished shard in its temporary folder (it is mid-write)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        for entry in os.listdir(data_dir) if os.path.isdir(data_dir) else []:
            version = os.path.join(data_dir, entry, "1.0.0")
            if entry.startswith(f".{name}.incomplete-") and os.path.isdir(version) and any(
                    f.endswith(".tmp") for f in os.listdir(version)):
                return os.path.join(data_dir, entry)
        time.sleep(0.002)
    raise AssertionError("no shard appeared")


def test_killed_run_leaves_no_dataset_and_the_next_run_cleans_up(tmp_path):
    src, data_dir = _slow_tree(tmp_path), tmp_path / "data"
    code = (f"from gan_jax.data import folders; folders.prepare({str(src)!r}, 'slow_faces', "
            f"data_dir={str(data_dir)!r}, image_size=96, progress=False)")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    leftover = _wait_for_shard(process, data_dir, "slow_faces")
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL

    assert os.listdir(data_dir) == [os.path.basename(leftover)]  # only the hidden temporary folder
    assert folders.open_records("slow_faces", data_dir) is None
    prepared = folders.prepare(src, "slow_faces", data_dir=data_dir, image_size=8, progress=False)
    assert prepared.num_examples == 500
    assert os.listdir(data_dir) == ["slow_faces"]  # the dead run's folder was removed


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_cli_removes_its_unfinished_folder(tmp_path, signum):
    src, data_dir = _slow_tree(tmp_path), tmp_path / "data"
    process = subprocess.Popen(_cli(f"--src={src}", "--name=slow_faces", f"--data_dir={data_dir}", "--image_size=96"),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_shard(process, data_dir, "slow_faces")
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr[-2000:]
    assert "interrupted: no dataset was written" in stderr and "Traceback" not in stderr
    assert not os.path.exists(data_dir) and stdout == ""  # the data directory it created is gone too


# --- CLI (real subprocesses) --------------------------------------------------------------------------------


def _cli(*args):
    return [sys.executable, "-m", "experiments.prepare_images", *args]


def _run(*args):
    return subprocess.run(_cli(*args), cwd=REPO, capture_output=True, text=True, timeout=300)


def test_cli_prepares_and_prints_the_train_command(tmp_path):
    src, _ = _tree(tmp_path)
    data_dir = tmp_path / "data"
    result = _run(f"--src={src}", "--name=my_faces", f"--data_dir={data_dir}", "--image_size=8")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert str(data_dir / "my_faces") in out
    assert "8 images, 8x8x3 (RGB), 3 classes: cat, dog, fox" in out
    assert "skipped 2 file(s)" in out and "cat/notes.txt" in out and "dog/broken.png" in out
    train = (f"python -m experiments.train --config={os.path.join('experiments', 'configs', 'folder_gan.py')} "
             f"--config.data.name=my_faces --config.data.data_dir={data_dir}")
    assert train in out.splitlines()[-1]
    assert len(folders.open_records("my_faces", data_dir)) == 8


def _one_error(result, message):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("gan_jax: error:")]
    assert len(errors) == 1 and message.lower() in errors[0].lower(), result.stderr[-3000:]
    assert result.stdout == ""


@pytest.mark.parametrize("args, message", [
    (["--name=faces"], "--src is required"),
    (["--src={src}"], "--name is required"),
    (["--src={src}", "--name=faces", "stray"], "unexpected argument(s) 'stray'"),
    (["--src={src}", "--name=faces", "--image_size=0"], "--image_size=0 is invalid"),
    (["--src={src}", "--name=faces", "--image_size=-4"], "--image_size=-4 is invalid"),
    (["--src={src}", "--name=faces", "--image_size=big"], "--image_size=big"),
    (["--src={src}", "--name=my/faces"], "'my/faces' is invalid"),
    (["--src={src}", "--name=MyFaces"], "'MyFaces' is invalid"),
    (["--src={src}", "--name=mnist"], "tensorflow-datasets dataset"),
    (["--src={src}", "--name=faces", "--colour"], "unknown command line flag 'colour'"),
    (["--src={tmp}/nowhere", "--name=faces"], "does not exist"),
    (["--src={src}/cat/notes.txt", "--name=faces"], "is a file, not a folder"),
    (["--src={tmp}/empty", "--name=faces"], "is empty"),
    (["--src={src}", "--name=faces", "--image_size=8", "--strict"], "--strict: 2 file(s)"),
    (["--src={src}", "--name=faces"], "different sizes"),
])
def test_cli_bad_inputs_give_one_error_line_and_write_nothing(tmp_path, args, message):
    src, _ = _tree(tmp_path)
    (tmp_path / "empty").mkdir()
    data_dir = tmp_path / "data"
    args = [a.format(src=src, tmp=tmp_path) for a in args] + [f"--data_dir={data_dir}"]
    _one_error(_run(*args), message)
    assert not os.path.exists(data_dir)


def test_cli_refuses_an_existing_dataset_without_overwrite(tmp_path):
    src, _ = _tree(tmp_path)
    data_dir = tmp_path / "data"
    folders.prepare(src, "faces", data_dir=data_dir, image_size=8, progress=False)
    before = _tree_digest(data_dir)
    _one_error(_run(f"--src={src}", "--name=faces", f"--data_dir={data_dir}", "--image_size=4"),
               f"already exists at {data_dir / 'faces'}: pass --overwrite")
    assert _tree_digest(data_dir) == before
    result = _run(f"--src={src}", "--name=faces", f"--data_dir={data_dir}", "--image_size=4", "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8 images, 4x4x3" in result.stdout


def test_channels_are_decided_by_the_images_that_decode(tmp_path):
    """A broken RGB file alone would make the dataset RGB: once it is skipped, the rest is written as grayscale."""
    src = tmp_path / "src"
    for rel, seed in [("a/1.png", 1), ("a/2.jpg", 2), ("b/3.png", 3)]:
        _save(str(src / rel), Image.fromarray(_smooth(9, 9, 1, seed)[..., 0]))
    colour = _png_bytes(Image.fromarray(_smooth(9, 9, 3, 4)))
    (src / "b" / "0_broken_rgb.png").write_bytes(colour[: len(colour) // 2])
    prepared = folders.prepare(src, "gray_after_skip", data_dir=tmp_path / "d", image_size=5, progress=False)
    assert prepared.shape == (5, 5, 1) and [rel for rel, _ in prepared.skipped] == ["b/0_broken_rgb.png"]
    assert prepared.skipped[0][1].startswith("cannot decode")  # its RGB header was read: the plan changed
    examples = _examples(folders.open_records("gray_after_skip", tmp_path / "d"))
    assert [int(e["label"]) for e in examples] == [0, 0, 1]
    for rel, example in zip(["a/1.png", "a/2.jpg", "b/3.png"], examples):
        np.testing.assert_array_equal(example["image"], _reference(src / rel, 5, "L"))


def test_foreign_temporary_folders_are_left_alone_and_never_read(tmp_path):
    src, _ = _tree(tmp_path)
    data_dir = tmp_path / "data"
    other_host = data_dir / ".my_faces.incomplete-0000abcd"
    (other_host / "1.0.0").mkdir(parents=True)
    (other_host / "owner.json").write_text('{"pid": 1, "host": "another-machine"}')
    assert folders.open_records("my_faces", data_dir) is None
    folders.prepare(src, "my_faces", data_dir=data_dir, image_size=8, progress=False)
    assert sorted(os.listdir(data_dir)) == [".my_faces.incomplete-0000abcd", "my_faces"]
