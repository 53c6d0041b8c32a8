"""Send DICOM series to a PACS or planning system (C-STORE) and check what it holds (C-ECHO, C-FIND).

Examples:
  python -m mrgan_tf.pacs --peer=ORTHANC@127.0.0.1:4242 --echo
  python -m mrgan_tf.pacs --peer=ORTHANC@127.0.0.1:4242 --send=runs/syn/p01/syn_mr

Common flags:
  --peer=AET@HOST:PORT   the PACS: its AE title, host and DICOM port
  --echo                 check the connection
  --send=FOLDER          a DICOM series to store (repeatable)
  --find_series=UID      print what the PACS holds of a series
"""
from mrgan_tf.io.pacs import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
