"""The weights stage: where a model's weights are kept, matched and brought in from elsewhere.

The stage's modules:

    checkpointing.py      training checkpoints, model_spec.json, resuming, loading any saved model
    pretrained.py         matching saved weights to a model, checking every weight was read
    importers.py          weights from another framework: picking the source, labels, the files written
    onnx_zoo.py           Caffe's bvlc_alexnet as the ONNX model zoo ships it, checked node by node
    torchvision_state.py  torchvision's AlexNet state_dict, checked entry by entry
    mapping.py            what the importers share: WeightImportError, PyTorch-layout weights to Keras
"""
