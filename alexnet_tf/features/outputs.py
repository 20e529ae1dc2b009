"""The features command's outputs: the features .npz file and the Figure-4 pictures, written atomically."""

import os
import uuid

import numpy as np

from alexnet_tf import explain
from alexnet_tf.features import figures
from alexnet_tf.features.extract import extract, thumbnails
from alexnet_tf.serving import embedding


def write_atomically(path, write):
    """Calls `write(file)` on a new file that then replaces `path`: no reader sees half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        with open(temporary, "wb") as f:
            write(f)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def save_png(picture, path):
    return write_atomically(path, lambda f: picture.save(f, format="PNG"))


def _display_name(name, label, label_names):
    if 0 <= label < len(label_names):
        return label_names[label]
    return os.path.basename(name)


def features_file(model, source, output, layer, batch_size, model_path=""):
    found = extract(model, source, batch_size, layer)
    if not len(found.indices):
        return None
    arrays = dict(
        features=found.values.astype(np.float32),
        files=np.array(found.names, dtype=str),
        labels=found.labels,
        label_names=np.array(source.label_names, dtype=str),
        layer=np.array(layer),
        model=np.array(model_path),
    )
    return write_atomically(output, lambda f: np.savez(f, **arrays))


def neighbours_picture(model, queries, gallery, output, k, batch_size, thumbnail):
    found_queries = extract(model, queries, batch_size, embedding.FEATURES_LAYER)
    found_gallery = extract(model, gallery, batch_size, embedding.FEATURES_LAYER)
    if not len(found_queries.indices) or not len(found_gallery.indices):
        return None
    order, distances = embedding.nearest_neighbours(found_queries.values, found_gallery.values, k)
    query_bytes = queries.encoded(found_queries.indices)
    gallery_bytes = gallery.encoded(found_gallery.indices[order.ravel()])
    rows = []
    for q, (index, name) in enumerate(zip(found_queries.indices, found_queries.names)):
        (picture,) = thumbnails([query_bytes[index]], model.image_size, thumbnail)
        row = [figures.Cell(picture, (os.path.basename(name), "query"))]
        for g, distance in zip(order[q], distances[q]):
            source_index = found_gallery.indices[g]
            (picture,) = thumbnails([gallery_bytes[source_index]], model.image_size, thumbnail)
            title = _display_name(found_gallery.names[g], found_gallery.labels[g], gallery.label_names)
            row.append(figures.Cell(picture, (title, f"distance {distance:.3g}")))
        rows.append(row)
    return save_png(figures.neighbours_figure(rows, thumbnail), output)


def predictions_picture(model, source, output, batch_size, thumbnail):
    found = extract(model, source, batch_size, layer=None)
    if not len(found.indices):
        return None
    class_names = model.class_names(found.values.shape[1], fallback=source.label_names)
    encoded = source.encoded(found.indices)
    items = []
    for index, name, label, probabilities in zip(found.indices, found.names, found.labels, found.values):
        (picture,) = thumbnails([encoded[index]], model.image_size, thumbnail)
        top = np.argsort(-probabilities, kind="stable")[: figures.TOP_K]
        bars = [(class_names[c], float(probabilities[c]), bool(c == label)) for c in top]
        truth = source.label_names[label] if 0 <= label < len(source.label_names) else os.path.basename(name)
        items.append((figures.Cell(picture, (truth,)), bars))
    return save_png(figures.predictions_figure(items, thumbnail), output)


def gradcam_picture(model, source, output, layer, class_index, batch_size, thumbnail):
    """Each image beside its Grad-CAM overlay at `layer`, with its top-5 labels (a KerasModel)."""
    found = extract(
        model,
        source,
        batch_size,
        compute=lambda crops: model.gradcam(crops, layer, class_index),
        what="grad-cam",
    )
    if not len(found.indices):
        return None
    heatmaps, explained, probabilities = found.values
    class_names = model.class_names(probabilities.shape[1], fallback=source.label_names)
    encoded = source.encoded(found.indices)
    items = []
    for i, (index, name, label) in enumerate(zip(found.indices, found.names, found.labels)):
        (picture,) = thumbnails([encoded[index]], model.image_size, thumbnail)
        (overlaid,) = explain.overlay(picture[None], heatmaps[i : i + 1])
        top = np.argsort(-probabilities[i], kind="stable")[: figures.TOP_K]
        bars = [
            (class_names[c], float(probabilities[i, c]), bool(c == label), bool(c == explained[i]))
            for c in top
        ]
        title = source.label_names[label] if 0 <= label < len(source.label_names) else os.path.basename(name)
        chosen = class_names[explained[i]]
        explains = f"{layer} map: {chosen} ({probabilities[i, explained[i]]:.1%})"
        if not heatmaps[i].max() > 0:  # no map has a positive weighted sum anywhere: nothing to show
            explains += ": empty"
        captions = (title, explains)
        items.append((figures.Cell(picture, captions), overlaid, bars))
    return save_png(figures.gradcam_figure(items, thumbnail), output)
