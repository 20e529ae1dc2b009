"""The weights stage: where a model's weights are kept, matched and brought in from elsewhere.

The stage's modules:

    checkpointing.py  training checkpoints, model_spec.json, resuming, loading any saved model
    pretrained.py     matching saved weights to a model, checking every weight was read
    importers.py      Caffe's bvlc_alexnet (ONNX model zoo) and torchvision's AlexNet weights
"""
