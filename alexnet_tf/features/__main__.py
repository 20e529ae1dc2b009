"""`python -m alexnet_tf.features`: see alexnet_tf/features/run.py for the flags."""

from alexnet_tf import cli
from alexnet_tf.features.run import PROGRAM, define_flags, main

if __name__ == "__main__":
    define_flags()
    cli.run(main, PROGRAM)
