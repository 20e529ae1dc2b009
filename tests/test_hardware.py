"""hardware: which processes turn TensorFlow's oneDNN kernels on before TensorFlow is imported."""

import pytest

from alexnet_tf import hardware


@pytest.mark.parametrize(
    "argv, environ, machine, turned_on",
    [
        (["python", "-m", "alexnet_tf.train", "--demo"], {}, "x86_64", True),
        (["python", "-m", "alexnet_tf.evaluate"], {}, "x86_64", True),
        (["python", "-m", "alexnet_tf.features"], {}, "AMD64", True),
        (["python", "-m", "alexnet_tf.benchmark", "--mode=train"], {}, "x86_64", True),
        # The user's choice stands, either way.
        (["python", "-m", "alexnet_tf.train"], {"TF_ENABLE_ONEDNN_OPTS": "0"}, "x86_64", False),
        # Not a command that computes on the CPU, not a command at all, or not an x86 CPU.
        (["python", "-m", "alexnet_tf.export"], {}, "x86_64", False),
        (["python", "-c", "import alexnet_tf"], {}, "x86_64", False),
        (["python", "my_script.py", "-m", "alexnet_tf.train"], {}, "x86_64", False),  # a script's argv
        (["python", "-u", "-X", "dev", "-m", "alexnet_tf.train"], {}, "x86_64", True),
        (["python", "-m", "alexnet_tf.train"], {}, "aarch64", False),
    ],
)
def test_commands_turn_onednn_on_unless_the_user_chose(argv, environ, machine, turned_on):
    before = dict(environ)
    assert hardware.command_onednn_default(argv=argv, environ=environ, machine=machine) is turned_on
    assert environ == ({**before, "TF_ENABLE_ONEDNN_OPTS": "1"} if turned_on else before)
