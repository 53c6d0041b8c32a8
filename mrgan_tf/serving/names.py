"""Names the exported models and their files share: TF Serving model names, the preprocessing asset.

Below export, signatures and synthesis, so that each reads them without importing the others.
"""
# Generator direction (model.trained_directions) -> TF Serving model name.
SERVING_NAMES = {"mr": "ct2mr", "ct": "mr2ct"}
DIRECTIONS = {v: k for k, v in SERVING_NAMES.items()}
PREPROCESS_ASSET = "preprocess.json"
ASSET_FORMAT = 1
