"""`python -m alexnet_tf.features`: its usage and flags are those of alexnet_tf.features.run."""

from absl import flags

from alexnet_tf import cli
from alexnet_tf.features import run

if __name__ == "__main__":
    __doc__ = run.__doc__  # what absl's --help prints first
    run.define_flags()
    flags.adopt_module_key_flags(run)  # --help and --helpshort list them
    cli.run(run.main, run.PROGRAM)
