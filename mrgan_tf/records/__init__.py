"""Records: the dataset spec and the conversion of volumes into sharded TFRecords."""
