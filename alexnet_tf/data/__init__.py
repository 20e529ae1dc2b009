"""The data stage: from images on disk to the batches a train or evaluation step reads.

The stage's modules:

    schema.py         the TFRecord contract: feature keys, labels.txt, manifest.json, shard names
    convert/          image folders or ILSVRC tars -> checked, resized, sharded TFRecords
    demo.py           the embedded 10-class demo dataset, rendered and converted on first use
    preprocessing.py  the pixel work: crops, flips, the paper's PCA lighting, ten-crop, the mean
    records.py        reading TFRecord shards: whole-shard checks, record counts, label checks
    order.py          the resumable training order: epochs, shares, windows, EpochPosition
    pipelines.py      tf.data training and evaluation pipelines, one PixelSettings for both
    corruptions.py    the 15 ImageNet-C corruptions of an evaluation crop, and the benchmark's CE/mCE
    representative.py  evaluation crops of a data dir as uint8 pixels, to calibrate int8 quantisation
    service.py        the tf.data service: the trainer's client, the dispatcher and worker servers
    sources.py        one object per data source (TFRecords, tensorflow-datasets, synthetic)
"""
