"""Tests of alexnet_tf/data/convert/ and python -m alexnet_tf.convert on generated image trees."""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time

from conftest import REPO
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from alexnet_tf.data import convert

CLI = ["-m", "alexnet_tf.convert"]
SYNSETS = ("n01440764", "n01443537", "n01484850")

# What each bad file becomes: (kind, expected skip reason or repair reason).
BAD_FILES = {
    "cmyk.JPEG": ("repaired", "CMYK JPEG converted to RGB"),
    "gray.JPEG": ("repaired", "grayscale JPEG converted to RGB"),
    "png.JPEG": ("repaired", "PNG content under a JPEG file name re-encoded as JPEG"),
    "gif.JPEG": ("repaired", "GIF content under a JPEG file name re-encoded as JPEG"),
    "bmp.JPEG": ("repaired", "BMP content under a JPEG file name re-encoded as JPEG"),
    "webp.JPEG": ("repaired", "WebP content under a JPEG file name re-encoded as JPEG"),
    "alpha.png": ("repaired", "PNG content file re-encoded as JPEG"),
    "truncated.JPEG": ("skipped", "truncated JPEG: no end-of-image marker"),
    "zero.JPEG": ("skipped", "empty file (0 bytes)"),
    "text.JPEG": ("skipped", "not an image: unrecognised content"),
}


def smooth_image(seed, height, width):
    """A uint8 RGB image with gradients and a block: JPEG round trips stay close to it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.stack([x, y, (x + y) / 2], -1) * rng.uniform(80, 200, 3) + rng.uniform(0, 50, 3)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    image[top : top + height // 3, left : left + width // 3] = rng.uniform(0, 255, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(array, fmt, mode=None, **kwargs):
    image = Image.fromarray(array)
    buffer = io.BytesIO()
    (image.convert(mode) if mode else image).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def make_tree(root, per_class=4, size=(60, 80), seed=0, bad=True, val_per_class=2):
    """Writes train/<synset>/*.JPEG (with every kind of bad file) and a flat val/ + labels.

    Returns:
      (train_dir, validation_dir, validation_labels path, class_names path).
    """
    train, val = os.path.join(root, "train"), os.path.join(root, "val")
    for c, synset in enumerate(SYNSETS):
        for n in range(per_class):
            image = smooth_image([seed, c, n], *size)
            write(os.path.join(train, synset, f"{synset}_{n}.JPEG"), encode(image, "JPEG", quality=95))
    if bad:
        image = smooth_image([seed, 99], 70, 90)
        good_jpeg = encode(image, "JPEG")
        rgba = np.concatenate([image, np.full((70, 90, 1), 128, np.uint8)], -1)
        contents = {
            "cmyk.JPEG": encode(image, "JPEG", "CMYK"),
            "gray.JPEG": encode(image, "JPEG", "L"),
            "png.JPEG": encode(image, "PNG"),
            "gif.JPEG": encode(image, "GIF"),
            "bmp.JPEG": encode(image, "BMP"),
            "webp.JPEG": encode(image, "WEBP"),
            "alpha.png": encode(rgba, "PNG"),
            "truncated.JPEG": good_jpeg[: len(good_jpeg) // 2],
            "zero.JPEG": b"",
            "text.JPEG": b"this is not an image\n",
        }
        for k, (name, data) in enumerate(contents.items()):
            write(os.path.join(train, SYNSETS[k % len(SYNSETS)], name), data)
        write(os.path.join(train, "README.txt"), b"loose file outside any class\n")
    labels = []
    for k in range(val_per_class * len(SYNSETS)):
        labels.append(SYNSETS[(k * 2) % len(SYNSETS)])
        write(
            os.path.join(val, f"ILSVRC2012_val_{k + 1:08d}.JPEG"),
            encode(smooth_image([seed, 50, k], *size), "JPEG", quality=95),
        )
    write(os.path.join(root, "val_labels.txt"), "".join(f"{s}\n" for s in labels).encode())
    write(
        os.path.join(root, "names.txt"),
        b"n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\nn01484850 great white shark\n",
    )
    return (train, val, os.path.join(root, "val_labels.txt"), os.path.join(root, "names.txt"))


def run_convert(tree, output_dir, **kwargs):
    train, val, labels, names = tree
    settings = dict(
        train_dir=train,
        validation_dir=val,
        validation_labels=labels,
        class_names=names,
        train_shards=3,
        validation_shards=2,
        num_workers=1,
        progress=False,
    )
    settings.update(kwargs)
    return convert.convert(str(output_dir), **settings)


def read_records(path):
    records = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        records.append({k: (v.bytes_list.value or v.int64_list.value)[0] for k, v in feature.items()})
    return records


def all_records(output_dir, split):
    manifest = convert.load_manifest(output_dir)
    return [
        r
        for shard in manifest["splits"][split]["shards"]
        for r in read_records(os.path.join(output_dir, shard["file"]))
    ]


def shard_stats(output_dir):
    return {
        n: (os.stat(os.path.join(output_dir, n)).st_ino, os.stat(os.path.join(output_dir, n)).st_mtime_ns)
        for n in os.listdir(output_dir)
        if n.startswith(("train-", "validation-"))
    }


def run_cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, *CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs
    )


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory):
    return make_tree(str(tmp_path_factory.mktemp("bad_tree")))


@pytest.fixture(scope="module")
def converted(bad_tree, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("converted"))
    return output_dir, run_convert(bad_tree, output_dir)


# ----------------------------------------------------------------------------- single images


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_convert_image_judges_content_not_name(bad_tree, name):
    synset = SYNSETS[list(BAD_FILES).index(name) % len(SYNSETS)]  # as make_tree places them
    with open(os.path.join(bad_tree[0], synset, name), "rb") as f:
        data = f.read()
    kind, reason = BAD_FILES[name]
    if kind == "skipped":
        with pytest.raises(convert.BadImageError, match=re.escape(reason)):
            convert.convert_image(data, name, 256, 95)
        return
    image = convert.convert_image(data, name, 0, 95)
    assert image.repair == reason
    assert convert.sniff_format(image.encoded) == "JPEG"
    decoded = tf.io.decode_jpeg(image.encoded, channels=0).numpy()
    assert decoded.shape == (70, 90, 3) == (image.height, image.width, 3)


def test_rgb_jpeg_without_resize_keeps_original_bytes():
    data = encode(smooth_image(1, 40, 50), "JPEG")
    image = convert.convert_image(data, "x.JPEG", resize_shorter=0)
    assert image == convert.ConvertedImage(data, 40, 50, None)
    resized = convert.convert_image(data, "x.JPEG", resize_shorter=256)
    assert (resized.height, resized.width, resized.repair) == (256, 320, None)


def test_resize_shorter_side_keeps_whole_image_and_aspect():
    for shape, expected in (
        ((375, 500, 3), (256, 341)),
        ((500, 375, 3), (341, 256)),
        ((100, 100, 3), (256, 256)),
        ((256, 300, 3), (256, 300)),
    ):
        image = tf.zeros(shape, tf.uint8)
        assert tuple(convert.resize_shorter_side(image, 256).shape[:2]) == expected


# ----------------------------------------------------------------------------- whole runs


def test_bad_files_are_repaired_or_skipped_with_reasons(converted):
    output_dir, manifest = converted
    skipped = {os.path.basename(s["path"]): s["reason"] for s in manifest["skipped"]}
    repaired = {os.path.basename(s["path"]): s["reason"] for s in manifest["repaired"]}
    assert skipped.pop("README.txt") == "file outside any class folder"
    for name, (kind, reason) in BAD_FILES.items():
        assert (skipped if kind == "skipped" else repaired)[name].startswith(reason), name
    assert len(skipped) + len(repaired) == len(BAD_FILES)
    assert manifest["complete"] and manifest["label_offset"] == 0 and manifest["num_classes"] == 3
    train = manifest["splits"]["train"]
    assert train["num_examples"] == 3 * 4 + 7  # 4 good per class and 7 repaired
    assert train["num_inputs"] == 3 * 4 + 10
    assert sum(train["per_class"].values()) == train["num_examples"]
    assert [s["file"] for s in train["shards"]] == [f"train-0000{k}-of-00003" for k in range(3)]
    assert manifest["splits"]["validation"]["num_examples"] == 6
    for split in ("train", "validation"):
        for shard in manifest["splits"][split]["shards"]:
            path = os.path.join(output_dir, shard["file"])
            assert convert.sha256_file(path) == shard["sha256"]
            assert len(read_records(path)) == shard["num_records"]
    repaired_names = set(repaired)
    for record in all_records(output_dir, "train"):
        image = tf.io.decode_jpeg(record["image/encoded"], channels=0).numpy()
        assert image.shape == (record["image/height"], record["image/width"], 3)
        assert min(image.shape[:2]) == 256
        assert record["image/format"] == b"JPEG" and record["image/colorspace"] == b"RGB"
        repaired_names.discard(record["image/filename"].decode())
    assert not repaired_names  # every repaired file is in the shards


def test_labels_synsets_and_names_follow_folders(converted, bad_tree):
    output_dir, manifest = converted
    with open(os.path.join(output_dir, "labels.txt"), encoding="utf-8") as f:
        assert f.read() == (
            "0\tn01440764\ttench, Tinca tinca\n"
            "1\tn01443537\tgoldfish, Carassius auratus\n"
            "2\tn01484850\tgreat white shark\n"
        )
    names = [c["name"] for c in manifest["classes"]]
    for record in all_records(output_dir, "train"):
        label = record["image/class/label"]
        filename = record["image/filename"].decode()
        assert os.path.exists(os.path.join(bad_tree[0], SYNSETS[label], filename))
        assert record["image/class/synset"].decode() == SYNSETS[label]
        assert record["image/class/text"].decode() == names[label]
    with open(bad_tree[2], encoding="utf-8") as f:
        truth = f.read().split()
    val = sorted(all_records(output_dir, "validation"), key=lambda r: r["image/filename"])
    assert [SYNSETS[r["image/class/label"]] for r in val] == truth


def test_round_trip_pixels_match_source_resized_with_the_same_code(converted, bad_tree):
    output_dir, _ = converted
    for record in all_records(output_dir, "train"):
        synset = SYNSETS[record["image/class/label"]]
        path = os.path.join(bad_tree[0], synset, record["image/filename"].decode())
        with Image.open(path) as image:  # an independent decoder
            rgba = np.asarray(image.convert("RGBA"), np.float32)
        alpha = rgba[..., 3:] / 255  # alpha.png: composited over white
        source = np.round(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
        expected = convert.resize_shorter_side(source, 256).numpy().astype(np.float32)
        stored = tf.io.decode_jpeg(record["image/encoded"]).numpy().astype(np.float32)
        assert stored.shape == expected.shape
        assert np.abs(stored - expected).mean() < 2.0, record["image/filename"]


def test_verify_is_clean_and_catches_damage(converted, tmp_path):
    output_dir, manifest = converted
    assert convert.verify(output_dir, num_workers=1, progress=False) == []
    damaged = str(tmp_path / "damaged")
    shutil.copytree(output_dir, damaged)
    shard = os.path.join(damaged, manifest["splits"]["train"]["shards"][1]["file"])
    with open(shard, "r+b") as f:
        f.seek(40)
        f.write(b"\x00" * 8)
    os.remove(os.path.join(damaged, manifest["splits"]["validation"]["shards"][0]["file"]))
    problems = convert.verify(damaged, num_workers=1, progress=False)
    assert any("sha256" in p for p in problems)
    assert any("validation-00000-of-00002: missing" in p for p in problems)


def test_cli_verify_of_a_truncated_shard_names_it_and_exits_2(converted, tmp_path):
    output_dir, manifest = converted
    damaged = str(tmp_path / "damaged")
    shutil.copytree(output_dir, damaged)
    name = manifest["splits"]["train"]["shards"][0]["file"]
    with open(os.path.join(damaged, name), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(damaged, name)) // 2)
    result = run_cli("--verify", f"--output_dir={damaged}", "--num_workers=1")
    assert result.returncode == 2, result.stderr
    named = [line for line in result.stderr.splitlines() if line.startswith(f"alexnet_tf.convert: {name}:")]
    assert named and "unreadable after" in result.stderr and "function_node" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"alexnet_tf.convert: error: {damaged} is not sound") and "--overwrite" in last


def test_resolution_zero_keeps_original_jpeg_bytes(bad_tree, tmp_path):
    manifest = run_convert(bad_tree, tmp_path, resize_shorter=0, train_shards=1)
    assert manifest["settings"]["resize_shorter"] == 0
    for record in all_records(str(tmp_path), "train"):
        synset = SYNSETS[record["image/class/label"]]
        with open(os.path.join(bad_tree[0], synset, record["image/filename"].decode()), "rb") as f:
            source = f.read()
        if convert.sniff_format(source) == "JPEG" and record["image/filename"] not in (
            b"cmyk.JPEG",
            b"gray.JPEG",
        ):
            assert record["image/encoded"] == source


@pytest.mark.slow
def test_cli_with_worker_processes(bad_tree, converted, tmp_path):
    """The real command line with two worker processes writes what one process writes; the files it
    skipped are named on stderr and make the exit status 1."""
    train, val, labels, names = bad_tree
    result = run_cli(
        f"--train_dir={train}",
        f"--validation_dir={val}",
        f"--validation_labels={labels}",
        f"--class_names={names}",
        f"--output_dir={tmp_path}",
        "--train_shards=3",
        "--validation_shards=2",
        "--num_workers=2",
    )
    assert result.returncode == 1, result.stderr
    assert "images/s" in result.stderr and "Traceback" not in result.stderr
    manifest = convert.load_manifest(str(tmp_path))
    assert manifest["skipped"]
    for note in manifest["skipped"]:
        line = f"alexnet_tf.convert: skipped {note['split']}/{note['path']}: {note['reason']}"
        assert line in result.stderr
    assert f"alexnet_tf.convert: {len(manifest['skipped'])} files skipped" in result.stderr
    for key in ("splits", "skipped", "repaired", "fingerprint", "settings", "classes"):
        assert manifest[key] == converted[1][key], key
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


# ----------------------------------------------------------------------------- resume


@pytest.fixture
def good_tree(tmp_path):
    return make_tree(str(tmp_path / "good"), per_class=3, bad=False)


def test_second_run_keeps_complete_shards(good_tree, tmp_path):
    output_dir = str(tmp_path / "out")
    first = run_convert(good_tree, output_dir)
    before = shard_stats(output_dir)
    assert len(before) == 5
    second = run_convert(good_tree, output_dir)
    assert shard_stats(output_dir) == before
    assert second == first


def test_resume_rebuilds_the_bookkeeping_of_kept_shards(converted, bad_tree, tmp_path):
    """Kept shards' skipped/repaired entries and per-class totals survive a resume."""
    output_dir, first = converted
    copy = str(tmp_path / "copy")
    shutil.copytree(output_dir, copy)
    manifest = convert.load_manifest(copy)
    del manifest["splits"]["train"]["shards"][0]
    with open(os.path.join(copy, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    resumed = run_convert(bad_tree, copy)
    for key in ("splits", "skipped", "repaired", "fingerprint", "settings", "classes"):
        assert resumed[key] == first[key], key


def test_killed_run_resumes(good_tree, tmp_path):
    output_dir = str(tmp_path / "out")
    first = run_convert(good_tree, output_dir)
    before = shard_stats(output_dir)
    # State of a run killed while writing train shard 1 and after renaming shard 2 but
    # before recording it: a temp-named partial shard and a manifest without either.
    manifest = convert.load_manifest(output_dir)
    manifest["complete"] = False
    manifest["splits"]["train"]["shards"] = manifest["splits"]["train"]["shards"][:1]
    with open(os.path.join(output_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    os.remove(os.path.join(output_dir, "train-00001-of-00003"))
    write(os.path.join(output_dir, ".tmp-train-00001-of-00003"), b"partial")
    # And a shard on disk that is shorter than the manifest says.
    shard = os.path.join(output_dir, "validation-00001-of-00002")
    with open(shard, "r+b") as f:
        f.truncate(100)

    resumed = run_convert(good_tree, output_dir)
    after = shard_stats(output_dir)
    assert after["train-00000-of-00003"] == before["train-00000-of-00003"]  # kept
    assert after["validation-00000-of-00002"] == before["validation-00000-of-00002"]
    assert after["train-00002-of-00003"] != before["train-00002-of-00003"]  # not in manifest
    assert after["validation-00001-of-00002"] != before["validation-00001-of-00002"]
    assert not [n for n in os.listdir(output_dir) if n.startswith(".tmp-")]
    assert resumed["splits"] == first["splits"]  # same sha256s: the output is deterministic
    assert convert.verify(output_dir, num_workers=1, progress=False) == []


@pytest.mark.slow
def test_sigkilled_cli_leaves_no_partial_shard_and_resumes(tmp_path):
    tree = make_tree(str(tmp_path / "big"), per_class=40, size=(375, 500), bad=False)
    output_dir = str(tmp_path / "out")
    args = [
        f"--train_dir={tree[0]}",
        f"--validation_dir={tree[1]}",
        f"--validation_labels={tree[2]}",
        f"--output_dir={output_dir}",
        "--train_shards=40",
        "--validation_shards=2",
        "--num_workers=1",
    ]
    process = subprocess.Popen(
        [sys.executable, *CLI, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    manifest_path = os.path.join(output_dir, "manifest.json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with open(manifest_path, encoding="utf-8") as f:
                if len(json.load(f)["splits"]["train"]["shards"]) >= 3:
                    break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    manifest = convert.load_manifest(output_dir)
    assert not manifest["complete"], "the run finished before it could be killed"
    for name in shard_stats(output_dir):  # every final-named shard is whole
        read_records(os.path.join(output_dir, name))
    result = run_cli(*args, "--verify")
    assert result.returncode == 0, result.stderr
    assert convert.load_manifest(output_dir)["splits"]["train"]["num_examples"] == 120


def test_different_dataset_is_refused_without_overwrite(good_tree, tmp_path):
    output_dir = str(tmp_path / "out")
    run_convert(good_tree, output_dir)
    before = shard_stats(output_dir)
    other = make_tree(str(tmp_path / "other"), per_class=2, bad=False, seed=1)
    with pytest.raises(convert.ConversionError, match="different dataset.*--overwrite") as error:
        run_convert(other, output_dir)
    assert output_dir in str(error.value)
    with pytest.raises(convert.ConversionError, match="different settings \\(quality\\)"):
        run_convert(good_tree, output_dir, quality=80)
    assert shard_stats(output_dir) == before
    manifest = run_convert(other, output_dir, overwrite=True)
    assert manifest["splits"]["train"]["num_examples"] == 6
    assert len(shard_stats(output_dir)) == 5


def test_unknown_shards_without_manifest_are_refused(good_tree, tmp_path):
    write(str(tmp_path / "out" / "train-00000-of-00001"), b"someone else's data")
    with pytest.raises(convert.ConversionError, match="without a readable manifest"):
        run_convert(good_tree, str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == ["train-00000-of-00001"]


# ----------------------------------------------------------------------------- inputs


def test_tar_inputs_match_folder_inputs(good_tree, tmp_path):
    """ILSVRC2012_img_train.tar (a tar of per-class tars) and a flat validation tar."""
    train, val, labels, names = good_tree
    for synset in SYNSETS:
        with tarfile.open(tmp_path / f"{synset}.tar", "w") as archive:
            for name in sorted(os.listdir(os.path.join(train, synset))):
                archive.add(os.path.join(train, synset, name), arcname=name)
    with tarfile.open(tmp_path / "train.tar", "w") as archive:
        for synset in SYNSETS:
            archive.add(tmp_path / f"{synset}.tar", arcname=f"{synset}.tar")
    with tarfile.open(tmp_path / "val.tar", "w") as archive:
        for name in sorted(os.listdir(val)):
            archive.add(os.path.join(val, name), arcname=name)
    from_tar = run_convert(
        (str(tmp_path / "train.tar"), str(tmp_path / "val.tar"), labels, names),
        tmp_path / "from_tar",
        train_shards=1,
        validation_shards=1,
    )
    os.makedirs(tmp_path / "class_tars")
    for synset in SYNSETS:  # the official tar unpacked one level: a folder of per-class tars
        os.rename(tmp_path / f"{synset}.tar", tmp_path / "class_tars" / f"{synset}.tar")
    run_convert(
        (str(tmp_path / "class_tars"), val, labels, names),
        tmp_path / "from_class_tars",
        train_shards=1,
        validation_shards=1,
    )
    from_dirs = run_convert(good_tree, tmp_path / "from_dirs", train_shards=1, validation_shards=1)
    for split in ("train", "validation"):
        assert from_tar["splits"][split]["per_class"] == from_dirs["splits"][split]["per_class"]
        by_name = {r["image/filename"]: r for r in all_records(str(tmp_path / "from_dirs"), split)}
        assert len(by_name) == from_dirs["splits"][split]["num_examples"]
        for source in ("from_tar", "from_class_tars"):
            records = all_records(str(tmp_path / source), split)
            assert len(records) == len(by_name)
            for record in records:
                assert record == by_name[record["image/filename"]]


def test_validation_class_folders_and_file_synset_labels(good_tree, tmp_path):
    train, val, labels, names = good_tree
    with open(labels, encoding="utf-8") as f:
        truth = f.read().split()
    files = sorted(os.listdir(val))
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("".join(f"{n} {s}\n" for n, s in reversed(list(zip(files, truth)))))
    by_pairs = run_convert((train, val, str(pairs), names), tmp_path / "pairs")
    folders = tmp_path / "val_folders"
    for name, synset in zip(files, truth):
        os.makedirs(folders / synset, exist_ok=True)
        shutil.copy(os.path.join(val, name), folders / synset / name)
    by_folders = run_convert((train, str(folders), None, names), tmp_path / "folders")
    positional = run_convert(good_tree, tmp_path / "positional")
    counts = positional["splits"]["validation"]["per_class"]
    assert by_pairs["splits"]["validation"]["per_class"] == counts
    assert by_folders["splits"]["validation"]["per_class"] == counts


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_train", "--train_dir .*missing does not exist"),
        ("no_classes", "no class folders found in --train_dir .*empty"),
        ("empty_classes", "no image files found in --train_dir .*hollow"),
        ("label_count", "holds 6 files but validation labels .*short.txt lists 5"),
        ("default_labels", "holds 6 files but the ILSVRC-2012 ground truth .* lists 50000"),
        ("unknown_class", "validation class n99999999 .*has no folder in --train_dir"),
        ("missing_names", "--class_names .*nope.txt does not exist"),
    ],
)
def test_whole_run_errors_stop_before_writing(good_tree, tmp_path, case, message):
    train, val, labels, names = good_tree
    os.makedirs(tmp_path / "empty")
    os.makedirs(tmp_path / "hollow" / "n01440764")
    (tmp_path / "short.txt").write_text("n01440764\n" * 5)
    (tmp_path / "unknown.txt").write_text("n99999999\n" * 6)
    tree = {
        "missing_train": (str(tmp_path / "missing"), val, labels, names),
        "no_classes": (str(tmp_path / "empty"), val, labels, names),
        "empty_classes": (str(tmp_path / "hollow"), val, labels, names),
        "label_count": (train, val, str(tmp_path / "short.txt"), names),
        "default_labels": (train, val, None, names),
        "unknown_class": (train, val, str(tmp_path / "unknown.txt"), names),
        "missing_names": (train, val, labels, str(tmp_path / "nope.txt")),
    }[case]
    with pytest.raises(convert.ConversionError, match=message):
        run_convert(tree, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


def test_cli_input_error_is_one_line_and_status_2(tmp_path):
    missing = str(tmp_path / "no_such_folder")
    result = run_cli(f"--train_dir={missing}", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("alexnet_tf.convert: error:")]
    assert len(lines) == 1 and missing in lines[0] and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "out")


# ----------------------------------------------------------------------------- hostile trees


def _deep_unreachable_folder(parent, synset_dir):
    """A real folder whose path is longer than PATH_MAX: os.scandir on it fails even for root.

    Built with dir_fd-relative mkdir/open, as no absolute path can name it. Returns the name of
    its top component under `synset_dir` (the first folder the scan cannot enter lies below).
    """
    component = "d" * 250
    fd = os.open(synset_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):  # 20 * 251 bytes > 4096
            os.mkdir(component, dir_fd=fd)
            child = os.open(component, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open("deep.JPEG", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, encode(smooth_image(7, 40, 50), "JPEG"))
        os.close(leaf)
    finally:
        os.close(fd)
    return component


def test_hostile_entries_are_skipped_with_reasons_and_the_rest_converted(good_tree, tmp_path):
    """Non-UTF-8 name, dangling symlink, symlink loops, a FIFO, an unreachable folder: listed, not fatal."""
    train = good_tree[0]
    first = os.path.join(train, SYNSETS[0])
    jpeg = encode(smooth_image(5, 40, 50), "JPEG")
    with open(os.path.join(os.fsencode(first), b"\xff\xfe.JPEG"), "wb") as f:  # not UTF-8
        f.write(jpeg)
    os.symlink(os.path.join(first, "gone.JPEG"), os.path.join(first, "dangling.JPEG"))
    os.symlink("self.JPEG", os.path.join(first, "self.JPEG"))  # ELOOP
    os.symlink("..", os.path.join(first, "up"))  # a folder that leads back to train/
    os.mkfifo(os.path.join(first, "pipe.JPEG"))  # reading it would block for ever
    os.symlink(os.path.join(first, f"{SYNSETS[0]}_0.JPEG"), os.path.join(first, "link.JPEG"))
    deep = _deep_unreachable_folder(tmp_path, os.path.join(train, SYNSETS[1]))
    manifest = run_convert(good_tree, tmp_path / "out")
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    f = f"{SYNSETS[0]}/"
    assert skipped.pop(f + "\\xff\\xfe.JPEG").startswith("file name is not valid UTF-8")
    assert skipped.pop(f + "dangling.JPEG").startswith("broken symlink")
    assert skipped.pop(f + "self.JPEG").startswith("symlink loop")
    assert skipped.pop(f + "up").startswith("folder already scanned through another path")
    assert skipped.pop(f + "pipe.JPEG").startswith("not a regular file")
    deep_path, reason = skipped.popitem()
    assert deep_path.startswith(f"{SYNSETS[1]}/{deep}/") and reason.startswith("unreadable folder"), reason
    assert not skipped
    train_split = manifest["splits"]["train"]
    assert train_split["num_examples"] == 3 * 3 + 1  # the good files and the working symlink
    assert train_split["per_class"] == {SYNSETS[0]: 4, SYNSETS[1]: 3, SYNSETS[2]: 3}
    assert manifest["complete"] and convert.verify(str(tmp_path / "out"), 1, progress=False) == []
    with open(tmp_path / "out" / "manifest.json", encoding="utf-8") as f:
        assert json.load(f)["skipped"] == manifest["skipped"]


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root reads a chmod 000 folder anyway; the PATH_MAX "
    "folder of the test above is the unreadable-folder case that runs as root",
)
def test_chmod_000_folder_is_listed(good_tree, tmp_path):
    locked = os.path.join(good_tree[0], SYNSETS[2], "locked")
    os.makedirs(locked)
    os.chmod(locked, 0)
    try:
        manifest = run_convert(good_tree, tmp_path / "out")
    finally:
        os.chmod(locked, 0o755)
    assert {s["path"]: s["reason"] for s in manifest["skipped"]}[f"{SYNSETS[2]}/locked"].startswith(
        "unreadable folder: Permission denied"
    )


def test_replaced_file_of_the_same_size_changes_the_fingerprint(good_tree, tmp_path):
    output_dir = str(tmp_path / "out")
    run_convert(good_tree, output_dir)
    path = os.path.join(good_tree[0], SYNSETS[0], f"{SYNSETS[0]}_0.JPEG")
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[-3] ^= 0x01  # other entropy-coded bytes, same size
    with open(path, "wb") as f:
        f.write(bytes(data))
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    with pytest.raises(convert.ConversionError, match="different dataset"):
        run_convert(good_tree, output_dir)  # not a silent resume over stale shards
