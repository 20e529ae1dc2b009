"""The trainer's library: what `alexnet_tf.train.run` assembles into a run.

    devices.py     the tf.distribute strategy, the chief, the precision policy
    inputs.py      the data source as the trainer sees it, and its dataset functions
    step.py        the training state and the distributed train/eval steps
    schedules.py   the learning-rate schedules, including the paper's plateau rule
    init_from.py   starting a run from other weights (--init_from, fine-tuning)
    progress.py    where a run stands in images of its epoch; resuming with another batch or workers
    loop.py        one run: resume, train, evaluate, checkpoint, export (and its exceptions)
    summaries.py   TensorBoard writers, images (Figure 3 filters) and the fc7 projector
    preemption.py  SIGTERM as a flag the loop polls
    watchdog.py    a step waiting for tf.data service batches: a dead dispatcher or SIGTERM ends it

Nothing here sets process-wide state (seeds, determinism, dtype policy): `train.run` does.
"""
