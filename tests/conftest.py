"""Shared test plumbing: the repository path and running documented commands as fresh processes."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_command(args, *, env=None, timeout=600, cwd=REPO):
    """Runs `python args...` (e.g. ["-m", "alexnet_tf.export", ...] or ["tools/x.py", ...]) in a
    fresh interpreter from the repository root, as a user would; `env` entries override ours."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def run():
    return run_command


# (folders, failures counted before their module began) of modules that have ended.
_ENDED_MODULES = []


@pytest.fixture(scope="module", autouse=True)
def _remove_module_temp_dirs(request, tmp_path_factory):
    """Deletes the folders a test module made with tmp_path_factory once the module has passed.

    pytest's `tmp_path_retention_policy = failed` (pytest.ini) removes a passing test's tmp_path
    at once but keeps module-scoped folders (checkpoints and SavedModels of several hundred MB
    each) until the whole session ends, so a full run would hold tens of GB at its peak. A module
    with a failure keeps its folders to look at. The decision waits for the next module's start:
    an error in a module fixture's teardown is counted only after this fixture's own teardown.
    The last module's folders go with the rest when the session passes (pytest's own policy).
    Session-scoped fixtures must not make folders with tmp_path_factory: the first module that
    used them would delete them.
    """
    while _ENDED_MODULES:
        folders, failures = _ENDED_MODULES.pop()
        if request.session.testsfailed == failures:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
    base = tmp_path_factory.getbasetemp()
    before = set(os.listdir(base))
    failures = request.session.testsfailed
    yield
    _ENDED_MODULES.append(([base / name for name in set(os.listdir(base)) - before], failures))
