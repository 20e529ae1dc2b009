"""A prediction as readers show it: the top-k rows of a signature's outputs, one file's result as text.

`alexnet_tf.predict`, `alexnet_tf.client` and `alexnet_tf.applications` share them, so a
prediction reads the same whether it came from a loaded SavedModel, TF Serving or Keras.
"""

import json


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def top_k(outputs, row=0):
    """[(label, score, class), ...] of row `row` of a signature's outputs (tensors, arrays or lists)."""
    labels, scores, classes = (
        list(outputs[k][row]) for k in ("top_k_labels", "top_k_scores", "top_k_classes")
    )
    return [(_text(label), float(s), int(c)) for label, s, c in zip(labels, scores, classes)]


def format_result(name, predictions, as_json=False):
    """One file's result: JSON on one line, or the name then one `  score  label` line per class."""
    if as_json:
        return json.dumps(
            {
                "file": name,
                "predictions": [
                    {"label": label, "score": round(s, 6), "class": c} for label, s, c in predictions
                ],
            }
        )
    return "\n".join([name] + [f"  {s:7.4f}  {label} ({c})" for label, s, c in predictions])
