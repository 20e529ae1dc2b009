"""The data stage: from images on disk to the batches a train or evaluation step reads.

The stage's modules:

    schema.py         the TFRecord contract: feature keys, labels.txt, manifest.json, shard names
    convert/          image folders or ILSVRC tars -> checked, resized, sharded TFRecords
    demo.py           the embedded 10-class demo dataset, rendered and converted on first use
    preprocessing.py  the pixel work: crops, flips, the paper's PCA lighting, ten-crop, the mean
    pipelines.py      tf.data pipelines over shards, tensorflow-datasets and synthetic batches
"""
