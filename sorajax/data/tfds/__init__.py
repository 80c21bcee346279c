"""Your own videos and images as a TFDS dataset: media files -> array_record shards -> a clip source.

    media_files.py  find, load and check videos and images; per-frame coding
    builder.py      the TFDS builder (no TensorFlow) and the clip index
    captioner.py    (re-)captioning a built dataset
    source.py       a built dataset as a clip source for the clip pipeline
"""
