"""The README's two commands: CI runs the test one verbatim in a fresh virtual environment;
the main one installs as the test one does (the same venv and package, fewer extras), and its
entry point runs on the package installed there (shortened to a few steps here; the full demo
is the trainer's own end-to-end test's job)."""

import os
import re
import shlex
import subprocess
import sys

from conftest import REPO
import pytest

from alexnet_tf import cli


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
    # Lint and format first (one ruff configuration, ruff.toml), then both kernel families:
    # the portability pass runs with oneDNN's kernels off.
    assert "ruff check . && ruff format --check . && python -m pytest" in tests
    # Each pass on two worker processes that take whole files (pytest-xdist, from the test
    # extra), so a file's module fixture runs once.
    assert tests.endswith(
        'python -m pytest -m "not portability" -n 2 --dist loadfile'
        " && TF_ENABLE_ONEDNN_OPTS=0 python -m pytest -m portability -n 2 --dist loadfile"
    )
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        test_extra = f.read().split('"test": [', 1)[1].split("]", 1)[0]
    assert re.search(r'"pytest-xdist[>=]', test_extra)


def test_readme_exit_statuses_are_the_commands():
    """README's "Exit statuses" table lists the statuses alexnet_tf.cli defines, each once."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("\n## Exit statuses\n", 1)[1].split("\n## ", 1)[0]
    statuses = [int(match) for match in re.findall(r"^\| *(\d+) *\|", section, re.M)]
    assert statuses == sorted(int(status) for status in cli.ExitStatus)
    assert statuses == [0, 1, 2, 130, 143]


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = readme_commands()
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    assert tests in lines
    assert "set -eo pipefail" in lines  # a failing test fails CI


def test_build_md_shows_the_readme_test_command_verbatim():
    """BUILD.md, for developers, repeats the test command: it must be the one CI runs."""
    _, tests = readme_commands()
    with open(os.path.join(REPO, "BUILD.md"), encoding="utf-8") as f:
        blocks = [block.strip() for block in re.findall(r"```bash\n(.*?)```", f.read(), re.S)]
    assert tests in blocks


def _steps(command):
    """A `a && b && c` command line as a list of argument lists."""
    return [shlex.split(step) for step in command.split(" && ")]


def _package_spec(requirement):
    """(path, extras) of a pip requirement like `.[cpu,test]`."""
    match = re.fullmatch(r"([^\[\]]+)(?:\[([^\]]*)\])?", requirement)
    assert match, requirement
    return match.group(1), {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}


def test_readme_main_command_installs_as_the_test_command_does():
    """The main command's install is the CI's (which runs the test command verbatim), so the
    fresh venv CI creates is the main command's, with the `test` extras on top."""
    main, tests = readme_commands()
    install, entry_point = main.rsplit(" && ", 1)
    assert entry_point == "python -m alexnet_tf.train --demo"
    main_steps, test_steps = _steps(install), _steps(tests)
    # The same venv, created and activated in the same way, first.
    assert main_steps[:-1] == test_steps[: len(main_steps) - 1]
    create, activate = main_steps[:-1]
    assert create[1:3] == ["-m", "venv"] and activate == [".", f"{create[3]}/bin/activate"], (
        create,
        activate,
    )
    main_pip, test_pip = main_steps[-1], test_steps[len(main_steps) - 1]
    assert main_pip[:2] == test_pip[:2] == ["pip", "install"]
    assert len(main_pip) == len(test_pip) == 3  # no options, one requirement each
    main_path, main_extras = _package_spec(main_pip[2])
    test_path, test_extras = _package_spec(test_pip[2])
    assert main_path == test_path == "."  # this checkout, not an index or another path
    assert main_extras <= test_extras, (main_extras, test_extras)
    # What the test command installs after that adds packages without changing those
    # requirements (--no-deps); then it checks the code with ruff and runs the tests.
    for step in test_steps[len(main_steps) :]:
        assert (
            step[:3] == ["pip", "install", "--no-deps"]
            or step[:3] == ["python", "-m", "pytest"]
            or (step[0] == "ruff")
            or (step[0] == "TF_ENABLE_ONEDNN_OPTS=0" and step[1:4] == ["python", "-m", "pytest"])
        ), step


@pytest.mark.slow
def test_readme_main_command_entry_point_runs_the_installed_package(tmp_path):
    """The entry point as written (shortened to a few steps) in this venv, which CI has just
    created with the main command's install (the test above), as a fresh process started
    outside the checkout and without PYTHONPATH: it imports the installed package, as a
    user's does. The full demo is the trainer's own end-to-end test's job."""
    main, _ = readme_commands()
    entry_point = shlex.split(main.rsplit(" && ", 1)[1])
    assert entry_point[0] == "python"  # the activated venv's interpreter: ours
    shortened = [
        sys.executable,
        *entry_point[1:],
        "--train_steps=3",
        f"--demo_cache_dir={tmp_path / 'cache'}",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = subprocess.run(shortened, cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "Trained 3 steps" in result.stdout
    assert "tensorboard --logdir" in result.stdout
    saved_model = result.stdout.split("SavedModel:", 1)[1].split()[0]
    assert os.path.isfile(os.path.join(saved_model, "saved_model.pb"))
