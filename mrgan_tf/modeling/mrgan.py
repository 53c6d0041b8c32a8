"""MR-GAN as a ``keras.Model`` whose ``train_step`` is the paper's Algorithm 1.

One batch carries four images packed as channels of one [B, H, W, 4C] tensor
(unpaired CT, unpaired MR, paired CT, paired MR; layout owned by
``mrgan_tf.training.data``) in the records' integer scale; packing keeps every
tf.distribute strategy, multi-worker included, on plain tensors. Each image is
C = ``channels`` slices (1, or a 2.5D stack of 2k+1, k = ``context_slices``): generators map a stack to
a stack, so the cycle's way back sees a stack too; the unpaired discriminator
judges a stack, the paired one a (source stack, result stack) pair. Decoding
to [-1, 1] and augmentation happen here, on the replica.

The mode (MR-GAN, paired-only pix2pix, unpaired-only CycleGAN) is chosen in
one place, ``MODES``; the three rows of Table I come from this one class.
"""
from __future__ import annotations

import dataclasses
import functools

import keras
import tensorflow as tf

from mrgan_tf.modeling import augment as augment_lib
from mrgan_tf.modeling import losses, networks
from mrgan_tf.modeling.batch import decode, split_steps, unpack
from mrgan_tf.modeling.fast.fused_adam import FusedAdam
from mrgan_tf.modeling.modes import MODES, PAIRED_BASELINE, Mode
from mrgan_tf.modeling.schedule import ConstantThenLinearDecay
from mrgan_tf.preprocess.context import channels_for

# Least squares generator target: 1 (Mao et al.), or the discriminator's real label, as the
# authors' code did (``MRIGAN.generator_loss_unpair``: (D(G(x)) - 0.9)^2).
GENERATOR_TARGETS = ("one", "real_label")

# An unpaired generator's cycle terms: its own cycle, G_back(G(src)) ~ src (Alg. 1 lines 6, 8),
# or both, adding G(G_back(real)) ~ real, as the authors' code summed both cycles into each
# generator's loss (``MRIGAN.cycle_consistency_loss`` in G_loss_unpair and F_loss_unpair).
UNPAIRED_CYCLES = ("own", "both")


@dataclasses.dataclass(frozen=True)
class MRGANConfig:
    mode: str = "mrgan"
    image_size: int = 256
    ngf: int = 64                  # generator width (paper 64)
    n_blocks: int = 9              # residual blocks (paper 9)
    upsample: str = "transpose"    # generator upsampling: transpose (paper) | nearest | bilinear (resize + conv)
    discriminator: str = "D1"      # Table II variant
    ndf_scale: float = 1.0         # discriminator width multiplier (1 = Table II)
    adversarial: str = "paper"     # paper (LSGAN unpaired, NLL paired) | lsgan | nll
    cycle_weight: float = 10.0     # lambda, Eq. (5)
    l1_weight: float = 100.0       # gamma, Eq. (5)
    n_iter: int = 1                # Alg. 1 n_iter: fresh batches, unpaired steps, then paired steps
    paired_repeats: int = 1        # repeats of the whole paired step (discriminator and generator)
    # The authors' code (src/mrigan.py, class MRIGAN) as it differs; the defaults are the paper's.
    paired_generator_repeats: int = 1   # generator updates per paired D update (train_step: 2)
    paired_cycle: bool = True      # MR-GAN's paired cycle terms (Eq. 3); _pair_net has none
    real_label: float = 1.0        # 0.9 in discriminator_loss_unpair (one-sided label smoothing)
    paired_real_label: float | None = None   # paired D's real label, None: real_label (discriminator_loss_pair: 1.0)
    generator_target: str = "one"  # LSGAN generator target: one (Mao et al.) | real_label (generator_loss_unpair)
    first_conv_norm: bool = True   # norm after the discriminator body's first conv (Discriminator.share_net: none)
    unpaired_cycle: str = "own"    # own cycle per generator (Alg. 1 lines 6, 8) | both (cycle_consistency_loss)
    pool_size: int = 0             # authors' code: 50 past fakes for the unpaired discriminators
    input_max: float = 255.0       # integer value of intensity 1.0 in the records (255 or 65535)
    augment: augment_lib.AugmentConfig = augment_lib.AugmentConfig()
    seed: int = 0
    paired_baseline_direction: str = "ct2mr"   # the paired baseline's generator: ct2mr (paper) | mr2ct (sCT)
    context_slices: int = 0        # 2.5D: k neighbours each side, 2k+1 slices per image (the records' k)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from {sorted(MODES)}")
        losses.adversarial_kinds(self.adversarial)
        if self.paired_baseline_direction not in PAIRED_BASELINE:
            raise ValueError(f"paired_baseline_direction must be one of {sorted(PAIRED_BASELINE)}, "
                             f"got {self.paired_baseline_direction!r}")
        if self.upsample not in networks.UPSAMPLING:
            raise ValueError(f"upsample must be one of {list(networks.UPSAMPLING)}, got {self.upsample!r}")
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {self.image_size}")
        if int(self.context_slices) != self.context_slices or self.context_slices < 0:
            raise ValueError(f"context_slices must be an integer >= 0, got {self.context_slices}")
        if self.unpaired_cycle not in UNPAIRED_CYCLES:
            raise ValueError(f"unpaired_cycle must be one of {list(UNPAIRED_CYCLES)}, got {self.unpaired_cycle!r}")
        if self.generator_target not in GENERATOR_TARGETS:
            raise ValueError(f"generator_target must be one of {list(GENERATOR_TARGETS)}, "
                             f"got {self.generator_target!r}")
        for name in ("n_iter", "paired_repeats", "paired_generator_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def channels(self) -> int:
        """Slices per image: the slice and its k neighbours on each side."""
        return channels_for(self.context_slices)

    @property
    def mode_spec(self) -> Mode:
        """The mode's table row; the paired baseline trains the generator ``paired_baseline_direction`` names."""
        m = MODES[self.mode]
        if self.mode == "paired":
            m = dataclasses.replace(m, paired_directions=PAIRED_BASELINE[self.paired_baseline_direction])
        if not self.paired_cycle:
            m = dataclasses.replace(m, paired_cycle=False)
        return m

    def real_label_for(self, phase: str) -> float:
        """The discriminator's real label in ``phase`` (the authors' code smoothed only the unpaired one)."""
        if phase == "paired" and self.paired_real_label is not None:
            return self.paired_real_label
        return self.real_label

    def generator_loss(self, phase: str):
        """The generator's adversarial loss in ``phase``; least squares aims at ``generator_target``."""
        kind = losses.adversarial_kinds(self.adversarial)[phase]
        if kind == "lsgan" and self.generator_target == "real_label":
            return functools.partial(losses.lsgan_generator, target=self.real_label_for(phase))
        return losses.ADVERSARIAL[kind][1]

    def updates_per_iteration(self, net: str, phase: str | None = None) -> int:
        """How often Algorithm 1 applies ``net``'s optimizer per iteration (in one phase, or both)."""
        if phase is None:
            return sum(self.updates_per_iteration(net, p) for p in ("unpaired", "paired"))
        m = self.mode_spec
        if phase == "unpaired":
            return self.n_iter * int(m.unpaired)
        per_step = self.paired_generator_repeats if net.startswith("syn") else 1
        return self.n_iter * self.paired_repeats * per_step * int(net[-2:] in m.paired_directions)


@dataclasses.dataclass
class Networks:
    """What one update sees of its direction: the generator, the way back, the discriminator (and pool).

    No name: an update cannot tell CT->MR from MR->CT, so the one traced update that serves
    both (``modeling.fast.shared_update``) computes what each inline update would.
    """
    gen: keras.Model
    back: keras.Model
    dis: networks.DualHeadDiscriminator
    pool: "FakePool | None" = None
    pool_salt: int = 0          # keys the pool's randomness apart per direction (data, not a branch)


@dataclasses.dataclass
class Direction:
    """One translation direction: "mr" for CT->MR (SynMR, DisMR), "ct" for MR->CT; its networks."""
    name: str
    nets: Networks


class FakePool(keras.layers.Layer):
    """A history of past fakes for the unpaired discriminator (Shrivastava et al.; authors' code).

    Each fake enters the pool; once it is full, with p = 0.5 the discriminator sees a
    stored fake instead (which is replaced by the new one). Per replica, not synchronised.
    """

    def __init__(self, size: int, image_shape, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.images = self.add_weight(shape=(size, *image_shape), initializer="zeros", trainable=False,
                                      name="images", aggregation="only_first_replica")
        self.count = self.add_weight(shape=(), initializer="zeros", dtype="int32", trainable=False,
                                     name="count", aggregation="only_first_replica")

    def query(self, fakes, seed):
        out = []
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), fakes.shape[0] or 1)
        for i in range(fakes.shape[0]):
            fake = tf.cast(fakes[i], self.images.dtype)
            coin = tf.random.stateless_uniform([], seeds[i])
            slot = tf.random.stateless_uniform([], seeds[i] + 1, 0, self.size, dtype=tf.int32)
            full = self.count >= self.size
            use_old = tf.logical_and(full, coin < 0.5)
            old = self.images[slot]
            write_slot = tf.where(full, slot, self.count)
            # Store the new fake unless we returned it as-is from a full pool.
            store = tf.logical_or(tf.logical_not(full), use_old)
            new_images = tf.tensor_scatter_nd_update(self.images, [[write_slot]], [fake])
            self.images.assign(tf.where(store, new_images, self.images))
            self.count.assign(tf.minimum(self.count + 1, self.size))
            out.append(tf.where(use_old, old, fake))
        return tf.cast(tf.stack(out), fakes.dtype)


class MRGAN(keras.Model):
    """SynMR, SynCT, DisMR and DisCT trained by Algorithm 1."""

    def __init__(self, config: MRGANConfig = MRGANConfig(), **kwargs):
        super().__init__(name="mrgan", **kwargs)
        self.config = config
        self.mode = config.mode_spec
        s, c = config.image_size, config.channels
        self.syn_mr, self.syn_ct = (
            networks.build_generator(config.ngf, config.n_blocks, s, input_nc=c, output_nc=c, name=f"syn_{d}",
                                     upsample=config.upsample)
            for d in ("mr", "ct"))
        self.dis_mr, self.dis_ct = (
            networks.DualHeadDiscriminator(config.discriminator, s, input_nc=c, ndf_scale=config.ndf_scale,
                                           body_first_norm=config.first_conv_norm, name=f"dis_{d}")
            for d in ("mr", "ct"))
        self.pool_mr, self.pool_ct = (FakePool(config.pool_size, (s, s, c), name=f"pool_{d}") if config.pool_size
                                      else None for d in ("mr", "ct"))
        self.directions = _directions(self.syn_mr, self.syn_ct, self.dis_mr, self.dis_ct, self.pool_mr, self.pool_ct)
        self.iteration = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False,
                                         name="iteration", aggregation="only_first_replica")
        self.adversarial = {phase: (losses.ADVERSARIAL[kind][0], config.generator_loss(phase))
                            for phase, kind in losses.adversarial_kinds(config.adversarial).items()}
        self.update_runner = None   # None: updates built inline in the step; else e.g. shared_update.SharedUpdates
        self.built = True

    @property
    def trained_directions(self) -> tuple[str, ...]:
        """Generators this mode trains (the paired baseline leaves SynCT untouched)."""
        if self.mode.unpaired:
            return ("mr", "ct")
        return self.mode.paired_directions

    # ------------------------------------------------------------------ compile
    def compile(self, optimizers: dict[str, keras.optimizers.Optimizer], **kwargs):
        """Takes one optimizer per network: keys syn_mr, syn_ct, dis_mr, dis_ct.

        Keys "<net>/unpaired" and "<net>/paired" give a phase its own optimizer (as
        the authors' code had eight). Call inside the strategy scope: each optimizer
        is built on all weights of its network, because an update changes only a
        subset (one discriminator head and tail).
        """
        super().compile(optimizer=None, **kwargs)
        self.optimizers = _built_optimizers(optimizers, {"syn_mr": self.syn_mr, "syn_ct": self.syn_ct,
                                                         "dis_mr": self.dis_mr, "dis_ct": self.dis_ct})

    def optimizer_for(self, net: str, phase: str):
        """The optimizer that updates ``net`` (syn_mr, dis_ct, ...) in ``phase``."""
        return self.optimizers.get(f"{net}/{phase}", self.optimizers.get(net))

    # ------------------------------------------------------------------ Algorithm 1
    @tf.autograph.experimental.do_not_convert
    def train_step(self, batch):
        """One iteration of Algorithm 1: n_iter unpaired steps (lines 2-9), then n_iter paired ones (10-16).

        Each inner step draws fresh samples (lines 3-4, 11): ``batch`` holds n_iter
        per-step batches one after another, and each step takes its own slice.
        Its Python branches and loops depend on the config only, never on tensors, so
        autograph is not needed; skipping its source conversion of this and every
        function it calls (~350 of them, Keras layers included) saves seconds of tracing.
        """
        steps = split_steps(_decoded_and_augmented(batch, self.config, self._seed), self.config.n_iter)
        to_mr, to_ct, logs = self.directions["mr"], self.directions["ct"], {}
        if self.mode.unpaired:                                         # lines 2-9
            for i, (ct, mr, _, _) in enumerate(steps):
                logs.update(self._update(to_mr, src=ct, real=mr, phase="unpaired", step=i))   # lines 5-6
                logs.update(self._update(to_ct, src=mr, real=ct, phase="unpaired", step=i))   # lines 7-8
        if self.mode.paired:                                           # lines 10-16
            for _, _, p_ct, p_mr in steps:
                for _ in range(self.config.paired_repeats):
                    if "mr" in self.mode.paired_directions:
                        logs.update(self._update(to_mr, src=p_ct, real=p_mr, phase="paired"))  # 12-13
                    if "ct" in self.mode.paired_directions:
                        logs.update(self._update(to_ct, src=p_mr, real=p_ct, phase="paired"))  # 14-15
        self.iteration.assign_add(1)
        return _format_logs(logs)

    def _update(self, d: Direction, src, real, phase: str, step: int = 0) -> dict:
        """``update`` for one direction and phase, run by ``update_runner`` where one is set; its logs."""
        if self.update_runner is not None:
            d_loss, g_loss, terms = self.update_runner.run(d, src, real, phase)
        else:
            d_loss, g_loss, terms = self.update(d.nets, self.optimizer_for(f"syn_{d.name}", phase),
                                                self.optimizer_for(f"dis_{d.name}", phase), src, real, phase, step)
        logs = {f"{phase}/dis_{d.name}": d_loss, f"{phase}/syn_{d.name}": g_loss}
        logs.update({f"{phase}/syn_{d.name}_{k}": v for k, v in terms.items()})
        return logs

    def update(self, d: Networks, g_opt, d_opt, src, real, phase: str, step: int = 0) -> tuple:
        """Lines 5-8 or 12-15 for one direction: (D's loss, G's loss, G's loss terms).

        The fake G(src) is computed once, under the generator's tape: the
        discriminator update uses it without gradient, and since G has not changed
        in between, the first generator update reuses it (no second forward pass).
        Paired, the generator is updated ``paired_generator_repeats`` times per
        discriminator update (the authors' ``MRIGAN.train_step`` ran it twice "to make
        sure that d_loss does not go to zero"); each repeat computes a new fake.
        Unpaired: D judges single images; ``real`` is an independent target-domain
        image. Paired: D judges (src, image) pairs and ``real`` is src's partner.
        ``step`` (the inner step) keys the fake pool's randomness.
        """
        cfg = self.config
        judge = (lambda x: d.dis.unpaired(x, training=True)) if phase == "unpaired" \
            else (lambda x: d.dis.paired(src, x, training=True))
        scale = 1.0 / tf.distribute.get_strategy().num_replicas_in_sync
        g_vars = d.gen.trainable_variables

        for repeat in range(cfg.paired_generator_repeats if phase == "paired" else 1):
            with tf.GradientTape() as g_tape:
                fake = d.gen(src, training=True)
                if repeat == 0:
                    with g_tape.stop_recording():
                        d_loss = self._discriminator_update(d, d_opt, real, fake, judge, phase, scale, step)
                terms = {"adv": self.adversarial[phase][1](judge(fake))}
                if phase == "unpaired" or self.mode.paired_cycle:
                    terms["cycle"] = cfg.cycle_weight * losses.l1(d.back(fake, training=True), src)
                if phase == "unpaired" and cfg.unpaired_cycle == "both":
                    terms["cycle_back"] = cfg.cycle_weight * losses.l1(
                        d.gen(d.back(real, training=True), training=True), real)
                if phase == "paired":
                    terms["l1"] = cfg.l1_weight * losses.l1(fake, real)
                g_loss = tf.add_n(list(terms.values()))
                scaled = g_opt.scale_loss(g_loss * scale)
            g_opt.apply_gradients(zip(g_tape.gradient(scaled, g_vars), g_vars))
        return d_loss, g_loss, terms

    def _discriminator_update(self, d: Networks, d_opt, real, fake, judge, phase: str, scale, step: int):
        """D's update on ``real`` against ``fake`` (unpaired: maybe a pooled past fake); returns its loss."""
        d_vars = d.dis.variables_for(phase)
        shown = fake
        if phase == "unpaired" and d.pool is not None:
            shown = d.pool.query(fake, self._seed(d.pool_salt + 10 * step))
        with tf.GradientTape() as d_tape:
            d_loss = self.adversarial[phase][0](judge(real), judge(tf.stop_gradient(shown)),
                                                self.config.real_label_for(phase))
            scaled = d_opt.scale_loss(d_loss * scale)
        d_opt.apply_gradients(zip(d_tape.gradient(scaled, d_vars), d_vars))
        return d_loss

    # ------------------------------------------------------------------ helpers
    def _seed(self, salt: int):
        """Stateless seed from (config seed, iteration, replica, salt): resumable randomness."""
        replica = tf.distribute.get_replica_context()
        rid = replica.replica_id_in_sync_group if replica is not None else 0
        return tf.stack([tf.cast(self.config.seed * 1000 + salt, tf.int64),
                         self.iteration * 4096 + tf.cast(rid, tf.int64)])

    def call(self, ct, training=False):
        """Inference is SynMR(CT)."""
        return self.syn_mr(ct, training=training)


def _decoded_and_augmented(batch, config: MRGANConfig, seed) -> tuple:
    """Unpaired CT, unpaired MR, paired CT and paired MR in [-1, 1], augmented (one map for the pair)."""
    c = config.channels
    u_ct, u_mr, p_ct, p_mr = unpack(decode(batch, config.input_max), c)
    ct = augment_lib.augment(u_ct, seed(1), config.augment)
    mr = augment_lib.augment(u_mr, seed(2), config.augment)
    pair = augment_lib.augment(tf.concat([p_ct, p_mr], axis=-1), seed(3), config.augment)  # same map for both
    return ct, mr, pair[..., :c], pair[..., c:]


def _directions(syn_mr, syn_ct, dis_mr, dis_ct, pool_mr, pool_ct) -> dict[str, Direction]:
    """CT->MR ("mr") and MR->CT ("ct"): each generator with the other as its way back."""
    return {"mr": Direction("mr", Networks(syn_mr, syn_ct, dis_mr, pool_mr, pool_salt=7)),
            "ct": Direction("ct", Networks(syn_ct, syn_mr, dis_ct, pool_ct, pool_salt=8))}


def _built_optimizers(optimizers: dict, nets: dict) -> dict:
    """Each optimizer built on its network's weights; every network has one for each phase."""
    out = {}
    for key, opt in optimizers.items():
        net = key.split("/")[0]
        if net not in nets:
            raise ValueError(f"optimizer key {key!r} names no network; use {sorted(nets)}")
        opt.build(nets[net].trainable_variables)
        out[key] = opt
    for net in nets:
        for phase in ("unpaired", "paired"):
            if f"{net}/{phase}" not in out and net not in out:
                raise ValueError(f"no optimizer for {net} ({phase} phase)")
    return out


def _format_logs(logs: dict) -> dict:
    """Scalars for Keras; MultiWorkerMirroredStrategy reduces logs along axis 0, so give them one
    there (keras-team/keras#20329)."""
    rank1 = isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)
    return {k: tf.reshape(tf.cast(v, tf.float32), [1] if rank1 else []) for k, v in sorted(logs.items())}


def make_optimizers(config: MRGANConfig, lr: float = 2e-4, beta_1: float = 0.5, beta_2: float = 0.999,
                    decay_start: int = 100_000, decay_steps: int = 200_000, separate_phases: bool = False,
                    loss_scale: bool = False) -> dict[str, keras.optimizers.Optimizer]:
    """Adam per network (or per network and phase), with Sec. II.D's schedule in iterations.

    ``FusedAdam`` is Keras' Adam with one fused kernel per weight (its formula to round-off, its checkpoints).
    """
    opts = {}
    for net in ("syn_mr", "syn_ct", "dis_mr", "dis_ct"):
        for phase in (("unpaired", "paired") if separate_phases else (None,)):
            per_iter = max(1, config.updates_per_iteration(net, phase))
            key = net if phase is None else f"{net}/{phase}"
            schedule = ConstantThenLinearDecay(lr, decay_start, decay_steps, per_iter)
            opt = FusedAdam(schedule, beta_1=beta_1, beta_2=beta_2, name=key.replace("/", "_"))
            opts[key] = keras.optimizers.LossScaleOptimizer(opt) if loss_scale else opt
    return opts
