"""`python -m alexnet_tf.benchmark`: how fast this machine trains, feeds and serves AlexNet.

The command's modules:

    __main__.py       flags, the environment and the report (markdown or --json)
    train.py          --mode=train and --mode=end_to_end: the trainer's own train step
    pipeline.py       --mode=input: the training input pipeline against its bounds
    serve.py          --mode=serve: SavedModel (and onnxruntime) latency and throughput
    tflite.py         --mode=tflite: LiteRT files' size and latency against the SavedModel
    keras_backend.py  `python -m alexnet_tf.benchmark.keras_backend`: training speed on any Keras
                      backend, for GPU nodes with JAX and no TensorFlow (imports none)
"""
