"""Training: tf.data from records, the train CLI, callbacks, checkpoints, validation, distribution."""
