"""Preprocessing: volumes on disk -> quantised, fixed-size axial slices, and back.

One module per job, in the order the data flows:

- ``config``: ``PreprocessConfig``, every parameter (stored in dataset.json);
- ``geometry``: canonical orientation, resampling, field-of-view overlap;
- ``mrgan_tf.preprocess.intensity``: CT mapping, MR normalisation, quantisation (each with its TF twin);
- ``masks``: body masks from CT or MR;
- ``slices``: axial images, the canvas fit and its inverse, the body box, kept slices;
- ``patients``: ``prepare_patient`` (used by make_records and synthesize) and ``restack_to_grid``.

Conventions (orientation, windows, quantisation) are those of docs/DESIGN.md.
Everything is importable from here, as before the split.
"""
from mrgan_tf.preprocess.config import FIT_MODES, SLICE_AXES, PreprocessConfig  # noqa: F401
from mrgan_tf.preprocess.geometry import (PLANE_AXES, from_plane, from_plane_array, overlap_fraction,  # noqa: F401
                                          resample_like, resample_to_spacing, to_canonical, to_plane, to_plane_array)
from mrgan_tf.preprocess.intensity import (ct_from_unit, ct_to_unit, denormalise_mr, dequantise,  # noqa: F401
                                           from_model_range, mr_range, normalise_mr, quantise, to_model_range,
                                           unwindow_ct, unwindow_ct_tf, window_ct, window_ct_tf)
from mrgan_tf.preprocess.masks import body_mask_from_ct, body_mask_from_mr  # noqa: F401
from mrgan_tf.preprocess.patients import PreparedPatient, SliceGeometry, prepare_patient, restack_to_grid  # noqa: F401
from mrgan_tf.preprocess.slices import (Placement, axial_image, axial_stack, body_box, fit_to_size,  # noqa: F401
                                        keep_slices, unfit, volume_from_axial_stack)
