"""Analytical FLOPs of one Algorithm-1 iteration: only the passes the algorithm needs.

Only convolutions are counted (norms, activations, padding, losses and Adam
are < 1% of the arithmetic and run at memory speed, not matmul speed). A conv
forward costs 2*K*K*Cin*Cout*Hout*Wout (transposed: *Hin*Win); its weight
gradient costs the same, and so does its input gradient, which is needed
everywhere except at a network's first conv when the input is data.

Per update of one direction (``MRGAN._update``), with G the generator, B the
way back and D the discriminator path of the phase (head + body + tail):

* D update: D forward on the real and on the (stop-gradient) fake, and for
  both a backward to D's weights and to D's inputs (data: first conv excluded).
* G update: G forward (the same fake the D update used: counted once),
  D forward on the fake again (D has just changed) + backward to its input
  only, cycle B forward + backward to its input only (B is not updated here),
  and G backward to weights and inputs (first conv excluded).

    python bench/flops.py                      # the full-size model
    python bench/flops.py --image_size 128 --ngf 16 --n_blocks 3 --ndf_scale 0.25
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


@dataclasses.dataclass(frozen=True)
class PathFlops:
    """Forward conv FLOPs of one network path and of its first conv (batch 1)."""
    forward: float
    first: float

    @property
    def backward_weights_and_inputs(self) -> float:     # input is data: no gradient to it
        return 2 * self.forward - self.first

    @property
    def backward_inputs(self) -> float:                 # gradient to the input only
        return self.forward


def _conv_flops(layer, in_shape, out_shape) -> float:
    import keras
    if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
        return 0.0
    k = layer.kernel.shape                              # [kh, kw, in, out] (transposed: [kh, kw, out, in])
    macs = k[0] * k[1] * k[2] * k[3]
    spatial = in_shape if isinstance(layer, keras.layers.Conv2DTranspose) else out_shape
    return 2.0 * macs * spatial[1] * spatial[2]


def generator_flops(gen) -> PathFlops:
    """Conv FLOPs of a functional generator from its layers' symbolic shapes."""
    import keras
    convs = [_conv_flops(l, l.input.shape, l.output.shape) for l in gen.layers
             if isinstance(l, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    return PathFlops(sum(convs), convs[0])


def _chain_flops(sequentials, shape) -> tuple[list[float], tuple]:
    out = []
    for seq in sequentials:
        for layer in seq.layers:
            new = tuple(layer.compute_output_shape(shape))
            out.append(_conv_flops(layer, shape, new))
            shape = new
    return [f for f in out if f], shape


def discriminator_flops(dis, image_size: int, kind: str, channels: int = 1) -> PathFlops:
    """Conv FLOPs of one head + body + tail path of a DualHeadDiscriminator."""
    c = channels if kind == "unpaired" else 2 * channels
    convs, _ = _chain_flops([dis.heads[kind], dis.body, dis.tails[kind]], (1, image_size, image_size, c))
    return PathFlops(sum(convs), convs[0])


def update_flops(g: PathFlops, back: PathFlops, d: PathFlops, cycle: bool) -> float:
    """FLOPs one ``MRGAN._update`` needs (see the module docstring)."""
    d_update = 2 * d.forward + 2 * d.backward_weights_and_inputs
    g_update = g.forward + d.forward + d.backward_inputs + g.backward_weights_and_inputs
    if cycle:
        g_update += back.forward + back.backward_inputs
    return d_update + g_update


def iteration_flops(model) -> dict:
    """FLOPs of one Algorithm-1 iteration of an ``MRGAN`` at batch 1, with the breakdown."""
    cfg, mode = model.config, model.mode
    s = cfg.image_size
    gens = {"mr": generator_flops(model.syn_mr), "ct": generator_flops(model.syn_ct)}
    dis = {"mr": model.dis_mr, "ct": model.dis_ct}
    paths = {(n, k): discriminator_flops(dis[n], s, k, cfg.channels) for n in dis for k in ("unpaired", "paired")}
    back = {"mr": "ct", "ct": "mr"}
    updates = []
    for _ in range(cfg.n_iter):
        if mode.unpaired:
            updates += [(n, "unpaired", True) for n in ("mr", "ct")]
        if mode.paired:
            updates += [(n, "paired", mode.paired_cycle) for _ in range(cfg.paired_repeats)
                        for n in mode.paired_directions]
    total = sum(update_flops(gens[n], gens[back[n]], paths[(n, k)], cyc) for n, k, cyc in updates)
    return {"total": total, "updates": len(updates), "generator_forward": gens["mr"].forward,
            "discriminator_forward": {k: paths[("mr", k)].forward for k in ("unpaired", "paired")},
            "generator_forwards": sum(2 if cyc else 1 for _, _, cyc in updates)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--n_blocks", type=int, default=9)
    p.add_argument("--ndf_scale", type=float, default=1.0)
    p.add_argument("--discriminator", default="D1")
    p.add_argument("--mode", default="mrgan")
    a = p.parse_args(argv)
    from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig
    model = MRGAN(MRGANConfig(mode=a.mode, image_size=a.image_size, ngf=a.ngf, n_blocks=a.n_blocks,
                              ndf_scale=a.ndf_scale, discriminator=a.discriminator))
    f = iteration_flops(model)
    print(f"generator forward {f['generator_forward'] / 1e9:.2f} GFLOP; discriminator forward "
          + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in f["discriminator_forward"].items())
          + f" GFLOP; {f['updates']} updates, {f['generator_forwards']} generator forwards; "
          f"iteration {f['total'] / 1e9:.1f} GFLOP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
