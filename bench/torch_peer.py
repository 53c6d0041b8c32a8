"""The PyTorch peer: the same Algorithm-1 iteration in plain PyTorch eager, for comparison only.

What a user who picked PyTorch instead would run (pytorch-CycleGAN-and-pix2pix
style): the same ResNet generators and dual-head D1 PatchGANs (Sec. II.D,
Table II, shapes and conv FLOPs equal to mrgan_tf.modeling.networks), the same losses
(LSGAN unpaired, NLL paired, cycle x10, L1 x100) and the same 8 updates per
iteration, each a D update then a G update on a fake computed once (the D
update sees it detached). Adam (lr 2e-4, beta1 0.5), one per network. Weights
that an update does not change get no gradient (``requires_grad_(False)``), as
pytorch-CycleGAN's ``set_requires_grad`` does. No augmentation.

Needs the ``bench`` extra (``torch==2.13.0``, CPU wheel); nothing in mrgan_tf imports it.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

D1 = dict(head=(64,), body=(64, 128, 256, 512), tail=(512, 1))


@dataclasses.dataclass(frozen=True)
class PeerSettings:
    """The knobs a PyTorch user would try for CPU speed."""
    channels_last: bool = False
    mkldnn: bool = True            # torch.backends.mkldnn.enabled (oneDNN convolutions)
    bf16: bool = False             # torch.autocast("cpu", torch.bfloat16)
    adam: str = "foreach"          # foreach | fused | for_loop
    flush_denormal: bool = True    # as TensorFlow does on CPU by default (denormals are ~100x slower)


def _norm(c: int) -> nn.Module:
    return nn.InstanceNorm2d(c, eps=1e-5, affine=True)


class ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _norm(c), nn.ReLU(True),
                                  nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _norm(c))

    def forward(self, x):
        return x + self.body(x)


def generator(ngf: int = 64, n_blocks: int = 9, channels: int = 1) -> nn.Module:
    """c7s1-ngf, d2ngf, d4ngf, n x R4ngf, u2ngf, ungf, c7s1-1, tanh (11,376,129 weights at full size)."""
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(channels, ngf, 7), _norm(ngf), nn.ReLU(True)]
    for f_in, f in ((ngf, 2 * ngf), (2 * ngf, 4 * ngf)):
        layers += [nn.Conv2d(f_in, f, 3, stride=2, padding=1), _norm(f), nn.ReLU(True)]
    layers += [ResidualBlock(4 * ngf) for _ in range(n_blocks)]
    for f_in, f in ((4 * ngf, 2 * ngf), (2 * ngf, ngf)):
        layers += [nn.ConvTranspose2d(f_in, f, 3, stride=2, padding=1, output_padding=1), _norm(f), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, channels, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def _stack(c_in: int, filters, stride: int, first_plain: bool, last_plain: bool) -> nn.Sequential:
    """4x4 convs with TensorFlow's "same" padding (stride 1: one before, two after)."""
    out = []
    for i, f in enumerate(filters):
        if stride == 1:
            out += [nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(c_in, f, 4)]
        else:
            out += [nn.Conv2d(c_in, f, 4, stride=2, padding=1)]
        c_in = f
        if last_plain and i == len(filters) - 1:
            continue
        if not (first_plain and i == 0):
            out.append(_norm(f))
        out.append(nn.LeakyReLU(0.2, True))
    return nn.Sequential(*out)


class DualHeadDiscriminator(nn.Module):
    """PatchGAN with an unpaired (1-channel) and a paired (2-channel) head and tail, one shared body."""

    def __init__(self, ndf_scale: float = 1.0, channels: int = 1):
        super().__init__()
        w = lambda fs: tuple(f if f == 1 else max(1, int(round(f * ndf_scale))) for f in fs)  # noqa: E731
        head, body, tail = w(D1["head"]), w(D1["body"]), w(D1["tail"])
        self.heads = nn.ModuleDict({"unpaired": _stack(channels, head, 1, True, False),
                                    "paired": _stack(2 * channels, head, 1, True, False)})
        self.body = _stack(head[-1], body, 2, False, False)
        self.tails = nn.ModuleDict({k: _stack(body[-1], tail, 1, False, True) for k in ("unpaired", "paired")})

    def judge(self, kind: str, x):
        return self.tails[kind](self.body(self.heads[kind](x)))

    def path_parameters(self, kind: str):
        return [*self.heads[kind].parameters(), *self.body.parameters(), *self.tails[kind].parameters()]


def lsgan_d(real, fake):
    return torch.mean((real.float() - 1.0) ** 2) + torch.mean(fake.float() ** 2)


def lsgan_g(fake):
    return torch.mean((fake.float() - 1.0) ** 2)


def nll_d(real, fake):
    real, fake = real.float(), fake.float()
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def nll_g(fake):
    fake = fake.float()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def l1(a, b):
    return torch.mean(torch.abs(a.float() - b.float()))


class Peer:
    """SynMR, SynCT, DisMR, DisCT and their four Adams; ``iteration(batch)`` = Algorithm 1."""

    def __init__(self, ngf: int = 64, n_blocks: int = 9, ndf_scale: float = 1.0,
                 settings: PeerSettings = PeerSettings(), seed: int = 0):
        torch.manual_seed(seed)
        torch.backends.mkldnn.enabled = settings.mkldnn
        torch.set_flush_denormal(settings.flush_denormal)
        self.settings = settings
        self.gen = {"mr": generator(ngf, n_blocks), "ct": generator(ngf, n_blocks)}
        self.dis = {"mr": DualHeadDiscriminator(ndf_scale), "ct": DualHeadDiscriminator(ndf_scale)}
        self.nets = [*self.gen.values(), *self.dis.values()]
        if settings.channels_last:
            for net in self.nets:
                net.to(memory_format=torch.channels_last)
        adam = {"foreach": dict(foreach=True), "fused": dict(fused=True), "for_loop": dict(foreach=False)}
        make = lambda p: torch.optim.Adam(p, lr=2e-4, betas=(0.5, 0.999), eps=1e-7,  # noqa: E731
                                          **adam[settings.adam])
        self.g_opt = {k: make(g.parameters()) for k, g in self.gen.items()}
        self.d_opt = {k: make(d.parameters()) for k, d in self.dis.items()}
        self.adversarial = {"unpaired": (lsgan_d, lsgan_g), "paired": (nll_d, nll_g)}

    def _input(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.settings.channels_last else x

    def _trainable(self, params):
        for net in self.nets:
            net.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)

    def update(self, name: str, src, real, phase: str) -> dict:
        """D update, then G update on the same fake (computed once), for one direction and phase."""
        gen, back = self.gen[name], self.gen["ct" if name == "mr" else "mr"]
        dis, d_opt, g_opt = self.dis[name], self.d_opt[name], self.g_opt[name]
        d_loss_fn, g_loss_fn = self.adversarial[phase]
        judge = (lambda x: dis.judge("unpaired", x)) if phase == "unpaired" else \
            (lambda x: dis.judge("paired", torch.cat([src, x], dim=1)))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.settings.bf16):
            self._trainable(gen.parameters())
            fake = gen(src)
            self._trainable(dis.path_parameters(phase))
            d_loss = d_loss_fn(judge(real), judge(fake.detach()))
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.settings.bf16):
            self._trainable(gen.parameters())       # D and the way back are not updated here
            g_loss = g_loss_fn(judge(fake)) + 10.0 * l1(back(fake), src)
            if phase == "paired":
                g_loss = g_loss + 100.0 * l1(fake, real)
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        return {f"{phase}/dis_{name}": d_loss.item(), f"{phase}/syn_{name}": g_loss.item()}

    def iteration(self, batch) -> dict:
        """batch: [B, 4, H, W] in [-1, 1] (unpaired CT, unpaired MR, paired CT, paired MR)."""
        ct, mr, p_ct, p_mr = (self._input(batch[:, i:i + 1]) for i in range(4))
        logs = {}
        logs.update(self.update("mr", ct, mr, "unpaired"))
        logs.update(self.update("ct", mr, ct, "unpaired"))
        logs.update(self.update("mr", p_ct, p_mr, "paired"))
        logs.update(self.update("ct", p_mr, p_ct, "paired"))
        return logs


def conv_flops(net: nn.Module, *inputs, call=None) -> float:
    """Forward conv FLOPs of one call, counted from the modules actually run (2 * MACs)."""
    total = [0.0]

    def hook(mod, inp, out):
        k = mod.weight.shape      # Conv2d [out, in/g, kh, kw]; ConvTranspose2d [in, out/g, kh, kw]
        spatial = inp[0].shape[2:] if isinstance(mod, nn.ConvTranspose2d) else out.shape[2:]
        total[0] += 2.0 * k[0] * k[1] * k[2] * k[3] * spatial[0] * spatial[1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        (call or net)(*inputs)
    for h in handles:
        h.remove()
    return total[0]


def peer_flops(peer: Peer, image_size: int) -> dict:
    """Generator and both discriminator paths' forward conv FLOPs at batch 1."""
    x = torch.zeros(1, 1, image_size, image_size)
    dis = peer.dis["mr"]
    return {"generator_forward": conv_flops(peer.gen["mr"], x),
            "discriminator_forward": {
                "unpaired": conv_flops(dis, x, call=lambda a: dis.judge("unpaired", a)),
                "paired": conv_flops(dis, torch.cat([x, x], 1), call=lambda a: dis.judge("paired", a))}}
