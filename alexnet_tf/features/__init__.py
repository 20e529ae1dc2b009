"""`python -m alexnet_tf.features`: a layer's activations, nearest neighbours and top-5 pictures.

The command's modules:

    __main__.py  the command: flags -> run -> exit status
    run.py       image sources, model loading, extraction and the written outputs
    figures.py   the Figure-4 pictures (nearest neighbours, top-5 predictions) drawn with Pillow
"""
