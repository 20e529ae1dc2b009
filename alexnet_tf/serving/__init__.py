"""The serving stage: what a trained model becomes for TF Serving, ONNX, LiteRT and other runtimes.

The stage's modules:

    signatures.py   the SavedModel's signatures (ServingModule) and the request limits they enforce
    limits.py       the image-header checks: format, size and truncation, read before decoding
    saved_model.py  versioned SavedModel export with warm-up requests, finding the version to load
    results.py      a prediction as readers show it: top-k rows, one file's result as text or JSON
    embedding.py    a layer's activations as features, and nearest neighbours (Figure 4)
    onnx_export.py  the same contract as an ONNX file through tf2onnx
    model_card.py   MODEL_CARD.md, generated from what a run, an export or an import recorded
    tflite_export.py  a LiteRT (TFLite) file for phones: float32, float16, dynamic-range or int8, builtin ops
    litert.py       reading a .tflite file's metadata and ops, and running it with the LiteRT interpreter
"""
