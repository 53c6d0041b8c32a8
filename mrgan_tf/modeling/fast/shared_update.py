"""Each phase's update traced once and run on either direction's weights.

The CT->MR and MR->CT updates of a phase are the same graph on other weights:
SynMR and SynCT, DisMR and DisCT have the same shapes. Tracing the train step
builds every update separately, and Python tracing plus grappler are most of a
process's first step. Here ``MRGAN.update`` is traced once per phase
inside a ``tf.function`` whose arguments are the direction's variables (weights,
Adam slots, step counters): the template networks (CT->MR's) run on the values
of those arguments (``keras.StatelessScope``), and Adam's kernels write to them
(``FusedAdam.apply_elsewhere``). Same ops and numbers as the inline update.

The contract with the model (all public): ``MRGAN.update(nets, g_opt, d_opt, src,
real, phase)`` sees a direction only as ``Networks`` (no name), so the trace, keyed by
phase alone, is right for both directions; ``MRGAN.optimizer_for`` and
``MRGAN.directions`` give the runner each direction's variables; ``attach(model)``
sets ``model.update_runner``. The bound networks forward every method of their
template (a new discriminator head needs nothing here) and refuse plain attributes
such as ``name``, which would be the CT->MR template's on both directions.

Only where that is exact and simple: the default (one-device) strategy, the
fused Adam with a learning-rate schedule and nothing else (no clipping, weight
decay, EMA, accumulation or loss scale), no fake pool, no XLA. Otherwise
``attach`` leaves ``update_runner`` None and each update is built inline in the step.
"""
from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from mrgan_tf.modeling.fast.fused_adam import FusedAdam


class _Bound:
    """A template network run on the values of other variables of the same shapes.

    Every method of the template runs in a scope that maps its weights to those variables,
    and a list of template weights it returns comes back as the matching variables.
    """

    def __init__(self, template: keras.Model, variables):
        self.template, self.variables = template, list(variables)
        self._index = {id(w): i for i, w in enumerate(template.weights)}

    def _scope(self):
        return keras.StatelessScope(state_mapping=[(t, v.read_value())
                                                   for t, v in zip(self.template.weights, self.variables)])

    def _bound(self, out):
        if isinstance(out, (list, tuple)) and out and all(id(w) in self._index for w in out):
            return [self.variables[self._index[id(w)]] for w in out]
        return out

    @property
    def trainable_variables(self) -> list:
        return self._bound(self.template.trainable_variables)

    def __call__(self, *args, **kwargs):
        with self._scope():
            return self.template(*args, **kwargs)

    def __getattr__(self, name):
        attr = getattr(self.template, name)
        if not callable(attr):
            raise AttributeError(f"a shared update cannot read {name!r} of its networks: it would be the CT->MR "
                                 "template's for both directions (keep MRGAN.update direction-blind)")

        def bound(*args, **kwargs):
            with self._scope():
                return self._bound(attr(*args, **kwargs))
        return bound


class _BoundAdam:
    """The optimizer interface ``MRGAN.update`` uses, writing to argument variables and slots."""

    def __init__(self, opt: FusedAdam, variables, momentums, velocities, iterations):
        self.opt, self.iterations = opt, iterations
        self._slots = {id(v): (m, s) for v, m, s in zip(variables, momentums, velocities)}

    def scale_loss(self, loss):
        return loss

    def apply_gradients(self, grads_and_vars):
        grads, variables = zip(*grads_and_vars)
        m, v = zip(*(self._slots[id(var)] for var in variables))
        self.opt.apply_elsewhere(grads, variables, m, v, self.iterations)


def _plain(opt) -> bool:
    """A FusedAdam whose update is its kernels alone (what ``apply_elsewhere`` reproduces)."""
    return (type(opt) is FusedAdam
            and isinstance(opt._learning_rate, keras.optimizers.schedules.LearningRateSchedule)
            and not (opt.clipnorm or opt.clipvalue or opt.global_clipnorm or opt.weight_decay or opt.use_ema
                     or opt.gradient_accumulation_steps or opt.loss_scale_factor))


def _same(a, b) -> bool:
    return a.get_config() == {**b.get_config(), "name": a.get_config()["name"]}


class SharedUpdates:
    """One traced update per phase, the same for both directions; ``run`` calls it with one direction's variables."""

    def __init__(self, model):
        self.model = model
        self._fns = {}

    @classmethod
    def for_model(cls, model) -> "SharedUpdates | None":
        """Shared updates for a compiled MRGAN where they are exact, else None (inline updates)."""
        if (tf.distribute.has_strategy() or model.jit_compile
                or any(d.nets.pool is not None for d in model.directions.values())
                or set(model.trained_directions) != {"mr", "ct"}):
            return None
        for phase in ("unpaired", "paired"):
            for net in ("syn", "dis"):
                a, b = model.optimizer_for(f"{net}_mr", phase), model.optimizer_for(f"{net}_ct", phase)
                if a is b or not (_plain(a) and _plain(b) and _same(a, b)):
                    return None
        weights = [w for net in (model.syn_mr, model.syn_ct, model.dis_mr, model.dis_ct) for w in net.weights]
        if any(w.constraint is not None for w in weights):
            return None
        return cls(model)

    def _state(self, d, phase: str) -> dict:
        """The direction's variables as one argument structure (same shapes for either direction)."""
        model, nets = self.model, d.nets
        g_opt, d_opt = model.optimizer_for(f"syn_{d.name}", phase), model.optimizer_for(f"dis_{d.name}", phase)
        state = {k: [w.value for w in net.weights] for k, net in (("gen", nets.gen), ("back", nets.back),
                                                                   ("dis", nets.dis))}
        for key, opt, trained in (("g", g_opt, nets.gen.trainable_variables),
                                  ("d", d_opt, nets.dis.variables_for(phase))):
            m, v = zip(*(opt.slots(w) for w in trained))
            state[key] = {"m": list(m), "v": list(v), "iterations": opt.iterations.value}
        return state

    def _fn(self, phase: str):
        """The phase's update, traced once on the CT->MR networks as templates (keyed by phase alone)."""
        if phase not in self._fns:
            model, template = self.model, self.model.directions["mr"].nets
            g_opt, d_opt = model.optimizer_for("syn_mr", phase), model.optimizer_for("dis_mr", phase)   # same config

            def update(state, src, real):
                nets = dataclasses.replace(template, gen=_Bound(template.gen, state["gen"]),
                                           back=_Bound(template.back, state["back"]),
                                           dis=_Bound(template.dis, state["dis"]), pool=None)
                g_vars, d_vars = nets.gen.trainable_variables, nets.dis.variables_for(phase)
                return model.update(nets, _BoundAdam(g_opt, g_vars, state["g"]["m"], state["g"]["v"],
                                                     state["g"]["iterations"]),
                                    _BoundAdam(d_opt, d_vars, state["d"]["m"], state["d"]["v"],
                                               state["d"]["iterations"]), src, real, phase)
            self._fns[phase] = tf.function(update, autograph=False)
        return self._fns[phase]

    def run(self, d, src, real, phase: str):
        return self._fn(phase)(self._state(d, phase), src, real)


def attach(model) -> bool:
    """Run a compiled ``model``'s updates through one trace per phase where that is exact; whether it does."""
    model.update_runner = SharedUpdates.for_model(model)
    return model.update_runner is not None
