"""The package a build copies is exactly today's modules: setuptools keeps build/lib between builds
and never deletes a file there, so a checkout whose modules moved would ship the old ones too."""

import os
import shutil
import subprocess
import sys

from conftest import REPO


def test_a_build_drops_modules_an_earlier_build_left_in_build_lib(tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(
        REPO,
        checkout,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest*"
        ),
    )
    # What a build before the stage folders left behind: alexnet_tf/serving.py beside serving/.
    stale = checkout / "build" / "lib" / "alexnet_tf"
    stale.mkdir(parents=True)
    (stale / "serving.py").write_text("raise ImportError('the module before the restructure')\n")
    (stale / "errors.py").write_text("")
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    built = {
        os.path.relpath(os.path.join(root, name), checkout / "build" / "lib")
        for root, _, names in os.walk(checkout / "build" / "lib")
        for name in names
        if name.endswith(".py")
    }
    source = {
        os.path.relpath(os.path.join(root, name), REPO)
        for root, _, names in os.walk(os.path.join(REPO, "alexnet_tf"))
        for name in names
        if name.endswith(".py")
    }
    assert built == source
