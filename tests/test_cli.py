"""Tests of alexnet_tf.cli: the exit statuses, the one failure line, and which errors are bad input."""

from conftest import run_command
import pytest
import tensorflow as tf

from alexnet_tf import cli
from alexnet_tf.config import ConfigError


def test_the_statuses_are_the_documented_numbers():
    assert {status.name: int(status) for status in cli.ExitStatus} == {
        "SUCCESS": 0,
        "FAILED": 1,
        "BAD_INPUT": 2,
        "INTERRUPTED": 130,  # 128 + SIGINT
        "PREEMPTED": 143,  # 128 + SIGTERM
    }


def test_fail_prints_one_line_and_exits_with_the_status(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.fail("alexnet_tf.x", ConfigError("--batch_size=0 must be >= 1"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "alexnet_tf.x: error: --batch_size=0 must be >= 1\n"
    # A stop is no error: the same command picks up from it.
    with pytest.raises(SystemExit) as exit_info:
        cli.fail("alexnet_tf.x", "preempted (signal 15) at step 3", cli.ExitStatus.PREEMPTED)
    assert exit_info.value.code == 143
    assert capsys.readouterr().err == "alexnet_tf.x: preempted (signal 15) at step 3\n"


def test_damaged_data_and_missing_files_are_bad_input_other_tensorflow_errors_fail_the_run():
    bad_input = (
        ConfigError("x"),
        tf.errors.InvalidArgumentError(None, None, "corrupt or truncated TFRecord shard"),
        tf.errors.DataLossError(None, None, "corrupted record"),
        tf.errors.NotFoundError(None, None, "no such file"),
        tf.errors.PermissionDeniedError(None, None, "denied"),
    )
    failed = (
        tf.errors.ResourceExhaustedError(None, None, "OOM"),
        tf.errors.UnavailableError(None, None, "peer gone"),
        RuntimeError("x"),
    )
    assert [cli.status_of(e) for e in bad_input] == [cli.ExitStatus.BAD_INPUT] * len(bad_input)
    assert [cli.status_of(e) for e in failed] == [cli.ExitStatus.FAILED] * len(failed)


@pytest.mark.parametrize(
    "command, flag, listed",
    [("alexnet_tf.info", "--help", "--variant"), ("alexnet_tf.features", "--helpshort", "--model")],
)
def test_help_lists_the_commands_flags_and_exits_0(command, flag, listed):
    """absl exits 1 after --help, the status the table keeps for a failed run; and a command
    package's flags, defined in its library module, are listed as its own."""
    result = run_command(["-m", command, flag], timeout=300)
    assert result.returncode == cli.ExitStatus.SUCCESS, result.stderr[-3000:]
    assert listed in result.stdout + result.stderr
