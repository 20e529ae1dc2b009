"""The serving stage: what a trained model becomes for TF Serving, ONNX and other runtimes.

The stage's modules:

    signatures.py   the SavedModel's signatures, image-header limits, versioned export, results
    embedding.py    a layer's activations as features, and nearest neighbours (Figure 4)
    onnx_export.py  the same contract as an ONNX file through tf2onnx
"""
