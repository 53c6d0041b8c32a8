"""Each phase's update traced once and run on either direction's weights.

The CT->MR and MR->CT updates of a phase are the same graph on other weights:
SynMR and SynCT, DisMR and DisCT have the same shapes. Tracing the train step
builds every update separately, and Python tracing plus grappler are most of a
process's first step. Here ``MRGAN._update_body`` is traced once per phase
inside a ``tf.function`` whose arguments are the direction's variables (weights,
Adam slots, step counters): the template networks (CT->MR's) run on the values
of those arguments (``keras.StatelessScope``), and Adam's kernels write to them
(``FusedAdam.apply_elsewhere``). Same ops and numbers as the inline update.

Only where that is exact and simple: the default (one-device) strategy, the
fused Adam with a learning-rate schedule and nothing else (no clipping, weight
decay, EMA, accumulation or loss scale), no fake pool, no XLA. Otherwise
``for_model`` returns None and each update is built inline in the step.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from mrgan_tf.modeling.fast.fused_adam import FusedAdam


class _Bound:
    """A template network run on the values of other variables of the same shapes."""

    def __init__(self, template: keras.Model, variables):
        self.template, self.variables = template, list(variables)
        self._index = {id(w): i for i, w in enumerate(template.weights)}

    def _scope(self):
        return keras.StatelessScope(state_mapping=[(t, v.read_value())
                                                   for t, v in zip(self.template.weights, self.variables)])

    def bound(self, template_vars) -> list:
        """The argument variables standing for some of the template's weights."""
        return [self.variables[self._index[id(w)]] for w in template_vars]

    @property
    def trainable_variables(self) -> list:
        return self.bound(self.template.trainable_variables)

    def __call__(self, x, training=None):
        with self._scope():
            return self.template(x, training=training)


class _BoundDiscriminator(_Bound):
    def unpaired(self, x, training=None):
        with self._scope():
            return self.template.unpaired(x, training=training)

    def paired(self, cond, x, training=None):
        with self._scope():
            return self.template.paired(cond, x, training=training)

    def variables_for(self, kind: str) -> list:
        return self.bound(self.template.variables_for(kind))


class _BoundAdam:
    """The optimizer interface ``_update_body`` uses, writing to argument variables and slots."""

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
    """One traced update per phase; ``run`` calls it with one direction's variables."""

    def __init__(self, model):
        self.model = model
        self._fns = {}

    @classmethod
    def for_model(cls, model) -> "SharedUpdates | None":
        """Shared updates for a compiled MRGAN where they are exact, else None (inline updates)."""
        if (tf.distribute.has_strategy() or model.jit_compile or model.pool_mr is not None
                or set(model.trained_directions) != {"mr", "ct"}):
            return None
        for phase in ("unpaired", "paired"):
            for net in ("syn", "dis"):
                a, b = model._optimizer(f"{net}_mr", phase), model._optimizer(f"{net}_ct", phase)
                if a is b or not (_plain(a) and _plain(b) and _same(a, b)):
                    return None
        weights = [w for net in (model.syn_mr, model.syn_ct, model.dis_mr, model.dis_ct) for w in net.weights]
        if any(w.constraint is not None for w in weights):
            return None
        return cls(model)

    def _state(self, d, phase: str) -> dict:
        """The direction's variables as one argument structure (same shapes for either direction)."""
        g_opt, d_opt = self.model._optimizer(f"syn_{d.name}", phase), self.model._optimizer(f"dis_{d.name}", phase)
        nets = {"gen": d.gen, "back": d.back, "dis": d.dis}
        state = {k: [w.value for w in net.weights] for k, net in nets.items()}
        for key, opt, trained in (("g", g_opt, d.gen.trainable_variables), ("d", d_opt, d.dis.variables_for(phase))):
            m, v = zip(*(opt.slots(w) for w in trained))
            state[key] = {"m": list(m), "v": list(v), "iterations": opt.iterations.value}
        return state

    def _fn(self, phase: str):
        if phase not in self._fns:
            model, template = self.model, self.model.to_mr

            def update(state, src, real):
                d = type(template)(template.name, _Bound(template.gen, state["gen"]),
                                   _Bound(template.back, state["back"]), _BoundDiscriminator(template.dis, state["dis"]))
                g_opt, d_opt = (model._optimizer(f"{net}_{template.name}", phase) for net in ("syn", "dis"))
                g_vars, d_vars = d.gen.trainable_variables, d.dis.variables_for(phase)
                return model._update_body(d, _BoundAdam(g_opt, g_vars, state["g"]["m"], state["g"]["v"],
                                                        state["g"]["iterations"]),
                                          _BoundAdam(d_opt, d_vars, state["d"]["m"], state["d"]["v"],
                                                     state["d"]["iterations"]), src, real, phase)
            self._fns[phase] = tf.function(update, autograph=False)
        return self._fns[phase]

    def run(self, d, src, real, phase: str):
        return self._fn(phase)(self._state(d, phase), src, real)
