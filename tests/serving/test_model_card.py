"""Tests of alexnet_tf.serving.model_card: MODEL_CARD.md rendered from the records beside a model.

In process, on records written here and one small model (one_weird_trick at 3 classes, zero
kernels: its parameter count is the variant's, and building it draws no random numbers). The
cards of real runs, exports and imports are checked where those tests already run them:
tests/test_train.py, tests/training/test_loop.py, tests/training/test_ema.py and
tests/weights/test_weights.py.
"""

import json
import os

from card_tables import assert_accuracy, assert_validation_row, card_lines, card_rows
import pytest

from alexnet_tf import hardware
from alexnet_tf.config import CONFIG_FILENAME, TrainConfig, config_json
from alexnet_tf.model import build_alexnet
from alexnet_tf.serving import model_card

# 61,100,840 parameters at 1000 classes, less fc8's 997 x 4097 rows (tests/test_model.py).
PARAMETERS = 61_100_840 - 997 * 4097
FINGERPRINT = "9f" * 32


@pytest.fixture(scope="module")
def model():
    return build_alexnet(
        num_classes=3, variant="one_weird_trick", input_shape=(63, 63, 3), kernel_initializer="zeros"
    )


def validation(top1, top5, loss, count=8.0):
    return {"loss": loss, "top1": top1, "top5": top5, "count": count, "images_per_sec": 12.5}


def write_run(root, results=True, history=True, corruptions=None):
    """A model dir as a finished 3-epoch run leaves it, and its data dir's manifest."""
    data_dir, model_dir = root / "data", root / "model"
    data_dir.mkdir()
    model_dir.mkdir()
    (data_dir / "manifest.json").write_text(
        json.dumps(
            {
                "fingerprint": FINGERPRINT,
                "num_classes": 3,
                "complete": True,
                "splits": {"train": {"num_examples": 1200}, "validation": {"num_examples": 8}},
            }
        )
    )
    config = config_json(
        TrainConfig(data_dir=str(data_dir), model_dir=str(model_dir), variant="one_weird_trick", epochs=3)
    )
    (model_dir / CONFIG_FILENAME).write_text(json.dumps(config))
    machine = {"cpu": "Test CPU 9000", "cpu_count": 2, "onednn": True, "gpus": []}
    epochs = [validation(0.375, 0.875, 1.25), validation(0.625, 1.0, 0.75), validation(0.5, 1.0, 0.8125)]
    if history:
        for epoch, values in enumerate(epochs, start=1):
            entry = {"epoch": epoch, "step": 10 * epoch, "validation": values, "train_images_per_sec": 30.0}
            model_card.record_validation(str(model_dir), {**entry, "hardware": machine})
    if results:
        result = {
            "global_step": 30,
            "epochs_completed": 3,
            "validation": epochs[-1],
            "validation_ten_crop": validation(0.75, 1.0, 0.625),
            "precision": "float32",
            "num_replicas": 1,
            "images_per_sec": 31.25,
            "ema_decay": 0.0,
        }
        (model_dir / model_card.RESULTS_FILENAME).write_text(json.dumps(result))
    if corruptions is not None:
        (model_dir / model_card.CORRUPTIONS_FILENAME).write_text(json.dumps(corruptions))
    return str(model_dir)


def test_a_run_card_shows_what_results_json_and_the_history_hold(model, tmp_path):
    model_dir = write_run(tmp_path)
    path = model_card.write_model_card(model_dir, model)
    assert path == os.path.join(model_dir, "MODEL_CARD.md")
    text = open(path, encoding="utf-8").read()
    rows, lines = card_rows(text), card_lines(text)
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)

    assert_validation_row(rows["final, centre crop"], results["validation"])
    assert_validation_row(rows["final, ten crops"], results["validation_ten_crop"])
    assert rows["final, centre crop"][3] == "step 30, epoch 3"
    # The best epoch is the second (62.5% top-1), from validation_history.json.
    with open(os.path.join(model_dir, model_card.HISTORY_FILENAME)) as f:
        history = json.load(f)
    assert_validation_row(rows["best, centre crop"], history[1]["validation"])
    assert rows["best, centre crop"][3] == "step 20, epoch 2"
    assert lines["parameters"] == f"{model.count_params():,}" == f"{PARAMETERS:,}"
    assert lines["variant"] == "`one_weird_trick`"
    assert lines["manifest fingerprint"] == f"`{FINGERPRINT}`"
    assert (lines["classes"], lines["train images"], lines["validation images"]) == ("3", "1,200", "8")
    assert lines["training throughput"].startswith("31.2 images/s")  # results.json: 31.25
    assert lines["trained on"] == "Test CPU 9000, 2 logical CPUs, oneDNN kernels on (epochs 1-3)"
    # The whole config.json, one flag a row; strings as they are, the rest as JSON.
    config = json.loads(open(os.path.join(model_dir, CONFIG_FILENAME)).read())
    for name, value in config.items():
        assert rows[f"`--{name}`"] == [value if isinstance(value, str) else json.dumps(value)], name
    assert model_card.TRAINED_HERE_TERMS in text
    assert "## Corruptions" not in text and "corruptions.json`: absent" in text


def test_a_run_killed_before_its_first_epoch_reads_not_measured_yet(model, tmp_path):
    model_dir = write_run(tmp_path, results=False, history=False)
    text = open(model_card.write_model_card(model_dir, model), encoding="utf-8").read()
    rows, lines = card_rows(text), card_lines(text)
    for name in ("final, centre crop", "final, ten crops", "best, centre crop"):
        assert rows[name][0] == "not measured yet", name
    assert lines["training throughput"] == "not measured yet"
    assert lines["manifest fingerprint"] == f"`{FINGERPRINT}`"  # the data is known from the start
    assert "results.json`: absent" in text
    # Nothing at all beside the model: still a card, and it says so.
    empty = tmp_path / "empty"
    empty.mkdir()
    text = open(model_card.write_model_card(str(empty), model), encoding="utf-8").read()
    assert "## Validation\n\nnot measured yet" in text and "Not recorded" in text


def test_a_run_from_before_the_history_shows_its_final_validation_as_the_best(model, tmp_path):
    model_dir = write_run(tmp_path, history=False)
    rows = card_rows(open(model_card.write_model_card(model_dir, model), encoding="utf-8").read())
    assert rows["best, centre crop"] == rows["final, centre crop"][:3] + [
        "step 30 (the only validation recorded)"
    ]


def test_a_run_in_progress_does_not_show_an_earlier_end_as_final(model, tmp_path):
    """A finished run extended with --epochs: results.json is of step 30, the history goes on."""
    model_dir = write_run(tmp_path)
    entry = {"epoch": 4, "step": 40, "validation": validation(0.875, 1.0, 0.5)}
    model_card.record_validation(model_dir, entry)
    rows = card_rows(open(model_card.write_model_card(model_dir, model), encoding="utf-8").read())
    assert rows["final, centre crop"][0] == "not measured yet (in progress: 4 epochs validated)"
    assert_validation_row(rows["best, centre crop"], entry["validation"])


def test_record_validation_replaces_the_epochs_a_resumed_run_evaluates_again(tmp_path):
    for epoch in (1, 2, 3):
        model_card.record_validation(str(tmp_path), {"epoch": epoch, "step": epoch, "validation": {}})
    history = model_card.record_validation(str(tmp_path), {"epoch": 2, "step": 2, "validation": {"top1": 1}})
    assert [(e["epoch"], e["validation"]) for e in history] == [(1, {}), (2, {"top1": 1})]
    with open(tmp_path / model_card.HISTORY_FILENAME) as f:
        assert json.load(f) == history


def test_corruptions_json_is_rendered_tolerantly(model, tmp_path):
    # The shape `python -m alexnet_tf.evaluate --corruptions` writes (tests/test_evaluate.py checks a
    # real one), with entries a damaged file could hold.
    report = {
        "clean": {"severity": 0, "top1_error": 0.25},
        "mce": None,
        "relative_mce": 1.5,
        "normalised": True,
        "results": [
            {"corruption": "gaussian_noise", "severity": 1, "top1_error": 0.5},
            {"corruption": "gaussian_noise", "severity": 5, "top1_error": 0.875},
            {"corruption": "fog", "severity": 1, "top1_error": 0.375},
            {"corruption": "broken"},  # left out
            "not an entry",
        ],
        "notes": ["frost is an approximation"],
    }
    model_dir = write_run(tmp_path, corruptions=report)
    text = open(model_card.write_model_card(model_dir, model), encoding="utf-8").read()
    rows, lines = card_rows(text), card_lines(text)
    assert lines["clean top-1 error"] == "25.00%"
    assert lines["mCE"] == "not computed (100: AlexNet's published robustness)"
    assert lines["relative mCE"] == "150.00"
    assert rows["corruption"] == ["severity 1", "severity 5"]
    assert rows["gaussian_noise"] == ["50.00", "87.50"] and rows["fog"] == ["37.50", "-"]
    assert "broken" not in text and "- frost is an approximation" in text
    (tmp_path / "model" / model_card.CORRUPTIONS_FILENAME).write_text("[1, 2]")  # not a report: no section
    assert "## Corruptions" not in open(model_card.write_model_card(model_dir, model)).read()


def test_imported_weights_carry_their_licence_into_files_exports_and_fine_tuning(model, tmp_path):
    keras_path = str(tmp_path / "tv.keras")
    record = {"source": "torchvision", "input": "/w/alexnet.npz", "input_sha256": "ab" * 32, "checks": ["c1"]}
    model_card.write_import_record(keras_path, record)
    imported = model_card.read_import_record(keras_path)
    assert imported["record"] == str(tmp_path / "tv.import.json")
    path = model_card.write_model_card(keras_path, model, imported=imported)
    assert path == str(tmp_path / "tv.MODEL_CARD.md")  # beside the file, as its labels are
    text = open(path, encoding="utf-8").read()
    assert model_card.LICENCE_NOTES["torchvision"] in text and model_card.IMAGENET_TERMS in text
    assert f"input file sha256: `{'ab' * 32}`" in text and "- check: c1" in text
    assert card_rows(text) == {}  # no run: no validation table, no recipe
    # A run fine-tuned from that file carries the caveat on.
    model_dir = write_run(tmp_path)
    config_path = os.path.join(model_dir, CONFIG_FILENAME)
    config = json.loads(open(config_path).read())
    config["init_from"] = keras_path
    open(config_path, "w").write(json.dumps(config))
    text = open(model_card.write_model_card(model_dir, model)).read()
    assert f"Fine-tuned from imported weights (`{keras_path}`)" in text
    assert model_card.LICENCE_NOTES["torchvision"] in text
    assert model_card.read_import_record(str(tmp_path / "other.keras")) is None


def test_accuracy_text_names_its_hits_and_unknown_figures():
    assert_accuracy(model_card.accuracy_text(validation(0.625, 1.0, 0.5), "top1"), 0.625, 8)
    assert model_card.accuracy_text({}, "top1") == model_card.NOT_MEASURED
    assert model_card.accuracy_text({"top1": float("nan")}, "top1") == model_card.NOT_MEASURED


def test_hardware_describes_this_machine():
    machine = hardware.describe()
    assert machine["cpu_count"] >= 1 and isinstance(machine["onednn"], bool)
    assert machine["cpu"] == hardware.cpu_model() and isinstance(machine["gpus"], list)
    json.dumps(machine)  # it goes into validation_history.json
