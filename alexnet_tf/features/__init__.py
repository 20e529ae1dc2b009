"""`python -m alexnet_tf.features`: a layer's activations, nearest neighbours, top-5 and Grad-CAM pictures.

The command's modules:

    __main__.py  the command: flags -> run -> exit status
    run.py       the flags, the checks of what they ask for, and the report on stderr
    sources.py   the images: files and folders, or a converted data dir's shards (and UsageError)
    models.py    the models: a .keras file or checkpoint, or an exported SavedModel
    extract.py   a model over the images in batches: features or probabilities, thumbnails
    outputs.py   the written outputs: the features .npz and the pictures, written atomically
    figures.py   the pictures (nearest neighbours, top-5 predictions, Grad-CAM) drawn with Pillow
"""
