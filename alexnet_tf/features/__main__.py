"""`python -m alexnet_tf.features`: see alexnet_tf/features/run.py for the flags."""

from absl import app

from alexnet_tf.features.run import define_flags, main

if __name__ == "__main__":
    define_flags()
    app.run(main)
