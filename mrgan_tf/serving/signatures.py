"""The exported graphs: one ``tf.Module`` per direction on a base that owns the signatures.

``ServingModule`` holds what both directions share (the generator's variables,
the preprocessing asset and constants, the ``normalised`` and
``preprocessing_parameters`` signatures, and the table of serving inputs);
``CtToMr`` and ``MrToCt`` add their physical-units signatures. The layout
follows the ``ExportModule`` pattern of tensorflow/models' ``official/``: each
signature is a ``tf.function`` method, and ``signatures()`` turns them into
concrete functions with named ``TensorSpec`` inputs for ``tf.saved_model.save``.

REST row format needs every output batch-major (dimension 0 = the request's N).
Two signatures keep their older shapes for gRPC and Python callers and get a
row-format twin instead: mr2ct ``serving_default`` (``mr_range`` is [2]) ->
``serving_rows`` (``mr_range`` [N, 2]); ``preprocessing_parameters`` (scalars,
no inputs: REST cannot call it) -> ``preprocessing_parameters_rows``. Every
other signature is row-valid as it is. Intensities go through
``mrgan_tf.preprocess.intensity`` only.
"""
from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from mrgan_tf.preprocess import PreprocessConfig
from mrgan_tf.preprocess.context import volume_generator
from mrgan_tf.preprocess.intensity import (ct_from_unit_tf, ct_to_unit_tf, from_model_range, normalise_mr_tf,
                                           quantised_tf, request_mr_range, to_model_range)
from mrgan_tf.preprocess.slices import fit_tf, unfit_tf
from mrgan_tf.serving.names import SERVING_NAMES


def _as_nhw1(x, name: str):
    """Accept [N, H, W] or [N, H, W, 1]; return the [N, H, W, 1] view and the input's shape."""
    shape = tf.shape(x)
    rank = tf.rank(x)
    ok = tf.logical_or(tf.equal(rank, 3), tf.logical_and(tf.equal(rank, 4), tf.equal(shape[-1], 1)))
    with tf.control_dependencies([tf.debugging.Assert(
            ok, [f"input '{name}' must be [N, H, W] or [N, H, W, 1]; got shape", shape])]):
        x = tf.reshape(x, tf.concat([shape[:3], [1]], 0))
    return x, shape


class ServingModule(tf.Module):
    """What both directions export: generator variables, preprocessing constants, shared signatures.

    Subclasses set ``input_name`` / ``output_name`` (the ``normalised`` tensors),
    implement ``serve`` (``serving_default``) and may add signatures in
    ``extra_signatures``.

    Args:
        generator: the trained Keras generator ([N, S, S, C] in [-1, 1] -> same; C = cfg.channels).
        cfg: the dataset's PreprocessConfig (window / range, fit, bits, image size).
        asset_path: ``preprocess.json`` to ship as ``assets/preprocess.json``.
    """

    direction = ""        # generator direction, a key of SERVING_NAMES
    input_name = ""
    output_name = ""
    typical_input = 0.0   # a plausible constant input value (warmup requests)

    def __init__(self, generator, cfg: PreprocessConfig, asset_path: str):
        super().__init__(name=SERVING_NAMES[self.direction])
        self.cfg = cfg
        # Track the tf.Variables under the Keras variables, not the Keras model: only then does
        # the TF1-style loader (TF Serving, saved_model_cli run) restore them. The closure keeps
        # the model itself out of the tracked attributes.
        self.generator_variables = [v.value for v in generator.variables]
        # Ordered slices in, one prediction per slice out: a 2.5D generator gets its neighbour
        # stacks built and its overlapping predictions averaged here, so no client needs k.
        self._generate = volume_generator(lambda x: tf.cast(generator(x, training=False), tf.float32),
                                          cfg.context_slices)
        self.preprocess_asset = tf.saved_model.Asset(asset_path)

    # ----------------------------------------------------------------- shared steps

    def parameters(self) -> dict:
        """The preprocessing constants, as graph constants."""
        cfg = self.cfg
        return {
            "direction": tf.constant(SERVING_NAMES[self.direction]),
            "image_size": tf.constant(cfg.image_size, tf.int32),
            "fit": tf.constant(cfg.fit),
            "bits": tf.constant(cfg.bits, tf.int32),
            "spacing_mm": tf.constant(cfg.spacing_mm, tf.float32),
            "ct_window_center": tf.constant(cfg.ct_window_center, tf.float32),
            "ct_window_width": tf.constant(cfg.ct_window_width, tf.float32),
            "ct_hu_range": tf.constant(cfg.ct_hu_range, tf.float32),
            "mr_percentiles": tf.constant(cfg.mr_percentiles, tf.float32),
            "preprocess_json": tf.constant(json.dumps(cfg.to_dict(), sort_keys=True)),
        }

    def generate01(self, q01_nhw1):
        """0..1 input at any H, W -> 0..1 output at the same H, W (quantise, fit, generator, unfit)."""
        s, mode = self.cfg.image_size, self.cfg.fit
        h, w = tf.shape(q01_nhw1)[1], tf.shape(q01_nhw1)[2]
        x = to_model_range(fit_tf(quantised_tf(q01_nhw1, self.cfg.bits), s, mode))
        return unfit_tf(from_model_range(self._generate(x)), h, w, s, mode, fill=0.0)

    # ----------------------------------------------------------------- signatures

    @tf.function
    def normalised(self, x):
        return {self.output_name: self._generate(x)}

    @tf.function
    def preprocessing_parameters(self):
        return self.parameters()

    @tf.function
    def preprocessing_parameters_rows(self, row):
        """The constants repeated once per element of ``row`` (any int32 values): REST-callable."""
        n = tf.size(row)
        return {k: tf.tile(v[None], tf.concat([[n], tf.ones([tf.rank(v)], tf.int32)], 0))
                for k, v in self.parameters().items()}

    def serve(self, x):
        raise NotImplementedError

    def extra_signatures(self) -> dict:
        return {}

    def example_inputs(self, n: int) -> dict:
        """{signature: {input: numpy array}} for a batch of ``n`` S x S slices (warmup requests)."""
        s = self.cfg.image_size
        return {"serving_default": {self.input_name: np.full([n, s, s], self.typical_input, np.float32)},
                "normalised": {self.input_name: np.zeros([n, s, s, 1], np.float32)},
                "preprocessing_parameters": {},
                "preprocessing_parameters_rows": {"row": np.zeros([1], np.int32)}}

    def signatures(self) -> dict:
        """{signature name: concrete function} for ``tf.saved_model.save``."""
        s = self.cfg.image_size
        sigs = {
            "serving_default": self.serve.get_concrete_function(tf.TensorSpec(None, tf.float32, self.input_name)),
            "normalised": self.normalised.get_concrete_function(
                tf.TensorSpec([None, s, s, 1], tf.float32, self.input_name)),
            "preprocessing_parameters": self.preprocessing_parameters.get_concrete_function(),
            "preprocessing_parameters_rows": self.preprocessing_parameters_rows.get_concrete_function(
                tf.TensorSpec([None], tf.int32, "row")),
        }
        sigs.update(self.extra_signatures())
        return sigs


class CtToMr(ServingModule):
    """SynMR: CT in HU -> MR on 0..1 (``mr``) and the paper's 0-255 (``mr_255``)."""

    direction, input_name, output_name = "mr", "ct", "mr"
    typical_input = 40.0  # HU, soft tissue

    @tf.function
    def serve(self, ct):
        x, shape = _as_nhw1(ct, "ct")
        mr = tf.reshape(self.generate01(ct_to_unit_tf(x, self.cfg)), shape)
        return {"mr": mr, "mr_255": mr * 255.0}


class MrToCt(ServingModule):
    """SynCT: raw MR -> CT in HU over the records' CT interval (``ct_hu``) and on 0..1 (``ct``)."""

    direction, input_name, output_name = "ct", "mr", "ct"
    typical_input = 300.0

    def _synthesize(self, x, shape, rows):
        """[N, H, W, 1] MR with ``rows`` [N, 2] per-slice (lo, hi) -> ct, ct_hu of the input's ``shape``."""
        lo, hi = (tf.reshape(rows[:, i], [-1, 1, 1, 1]) for i in (0, 1))
        ct = tf.reshape(self.generate01(normalise_mr_tf(x, lo, hi)), shape)
        return {"ct": ct, "ct_hu": ct_from_unit_tf(ct, self.cfg)}

    def _request_range(self, mr):
        x, shape = _as_nhw1(mr, "mr")
        lo_hi = request_mr_range(x, self.cfg.mr_percentiles)
        return x, shape, lo_hi, tf.tile(lo_hi[None], [shape[0], 1])

    @tf.function
    def serve(self, mr):
        """Per-request percentiles; the (lo, hi) used comes back as ``mr_range`` [2]."""
        x, shape, lo_hi, rows = self._request_range(mr)
        return {**self._synthesize(x, shape, rows), "mr_range": lo_hi}

    @tf.function
    def serve_rows(self, mr):
        """``serve`` with ``mr_range`` once per slice ([N, 2]): valid in REST row format."""
        x, shape, _, rows = self._request_range(mr)
        return {**self._synthesize(x, shape, rows), "mr_range": rows}

    @tf.function
    def with_mr_range(self, mr, mr_range):
        """``mr_range`` is [2] (one range for all slices) or [N, 2] (one per slice, as REST rows send it)."""
        x, shape = _as_nhw1(mr, "mr")
        rank, dims = tf.rank(mr_range), tf.pad(tf.shape(mr_range), [[0, 2]])   # padded: safe to index
        one = tf.equal(rank, 1) & tf.equal(dims[0], 2)
        per_slice = tf.equal(rank, 2) & tf.equal(dims[0], shape[0]) & tf.equal(dims[1], 2)
        with tf.control_dependencies([tf.debugging.Assert(
                one | per_slice, ["input 'mr_range' must be [2] or [N, 2]; got shape", tf.shape(mr_range)])]):
            rows = tf.broadcast_to(tf.reshape(mr_range, [-1, 2]), tf.stack([shape[0], 2]))
        return {**self._synthesize(x, shape, rows), "mr_range": tf.identity(mr_range)}

    def example_inputs(self, n: int) -> dict:
        s = self.cfg.image_size
        ranges = np.tile(np.array([[0.0, 1000.0]], np.float32), (n, 1))
        return {**super().example_inputs(n),
                "serving_rows": {"mr": np.full([n, s, s], self.typical_input, np.float32)},
                "with_mr_range": {"mr": np.full([n, s, s], self.typical_input, np.float32), "mr_range": ranges}}

    def extra_signatures(self) -> dict:
        mr = tf.TensorSpec(None, tf.float32, "mr")
        return {"serving_rows": self.serve_rows.get_concrete_function(mr),
                "with_mr_range": self.with_mr_range.get_concrete_function(
                    mr, tf.TensorSpec(None, tf.float32, "mr_range"))}


SERVING_MODULES = {cls.direction: cls for cls in (CtToMr, MrToCt)}
