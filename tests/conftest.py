"""Shared test plumbing: the repository path and running documented commands as fresh processes."""

import os
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
