"""The README's two commands: CI runs the test one verbatim, and the main one installs as
written in a fresh virtual environment on a copy of the checkout and runs its entry point
(shortened to a few steps here; the full demo is the trainer's own end-to-end test's job)."""

import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    """The bash code blocks of README.md's quick start, in order."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", quick_start, re.S)]


def test_readme_has_exactly_two_setup_commands():
    main, tests = readme_commands()
    assert "pip install" in main and main.endswith("python -m alexnet_tf.train --demo")
    assert "pip install" in tests and "python -m pytest" in tests
    # Both kernel families: the portability pass runs with oneDNN's kernels off.
    assert tests.endswith('python -m pytest -m "not portability" && TF_ENABLE_ONEDNN_OPTS=0 python -m pytest -m portability')


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = readme_commands()
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    assert tests in lines
    assert "set -eo pipefail" in lines  # a failing test fails CI


@pytest.mark.slow
def test_readme_main_command_in_a_fresh_venv(tmp_path):
    main, _ = readme_commands()
    # Everything up to the entry point runs verbatim; the entry point gets a few steps only.
    install, entry_point = main.rsplit(" && ", 1)
    shortened = f"{entry_point} --train_steps=3 --demo_cache_dir={tmp_path / 'cache'}"
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(["bash", "-c", f"{install} && cd / && {shortened}"], cwd=checkout, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert os.path.isdir(checkout / ".venv")
    assert "Trained 3 steps" in result.stdout
    assert "tensorboard --logdir" in result.stdout
    saved_model = result.stdout.split("SavedModel:", 1)[1].split()[0]
    assert os.path.isfile(os.path.join(saved_model, "saved_model.pb"))
