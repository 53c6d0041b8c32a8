"""Generic sharded TFRecord sets: typed schemas (``schema``), all-or-nothing
sharded writing (``writer``), tf.data / numpy reading and verification
(``reader``), and a checking CLI (``python -m tfrecords_tools.inspect``).

Knows examples and shards only; what the fields mean is up to the caller.
"""
