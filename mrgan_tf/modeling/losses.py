"""Eq. (1)-(5) as small pure functions on logits and images.

Each returns the mean over the (per-replica) batch; the model divides by the
number of replicas inside the tape (Keras 3's optimizer sums across replicas).
"""
from __future__ import annotations

import tensorflow as tf


def lsgan_discriminator(real_logits, fake_logits, real_label: float = 1.0):
    """Least squares (Eq. 2, Alg. 1 lines 5, 7): (D(real) - 1)^2 + D(fake)^2."""
    return (tf.reduce_mean(tf.square(real_logits - real_label))
            + tf.reduce_mean(tf.square(fake_logits)))


def lsgan_generator(fake_logits, target: float = 1.0):
    """Least squares generator term: (D(G(x)) - target)^2; LSGAN's target for fakes is 1.

    The authors' code (``generator_loss_unpair``) used the smoothed real label, 0.9.
    """
    return tf.reduce_mean(tf.square(fake_logits - target))


def nll_discriminator(real_logits, fake_logits, real_label: float = 1.0):
    """Negative log-likelihood (Eq. 1, Alg. 1 lines 12, 14) as sigmoid cross-entropy on logits."""
    real = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(real_logits), real_label),
                                                   logits=real_logits)
    fake = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(fake_logits), logits=fake_logits)
    return tf.reduce_mean(real) + tf.reduce_mean(fake)


def nll_generator(fake_logits):
    """Non-saturating form of log(1 - D(x, G(x))): -log D(x, G(x))."""
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(fake_logits),
                                                                  logits=fake_logits))


def l1(a, b):
    """Mean absolute difference: the cycle terms of Eq. (3) and the voxel-wise Eq. (4)."""
    return tf.reduce_mean(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))


ADVERSARIAL = {
    "lsgan": (lsgan_discriminator, lsgan_generator),
    "nll": (nll_discriminator, nll_generator),
}

# --adversarial: "paper" (Eq. 2: LSGAN unpaired, NLL paired) or one loss for every term.
ADVERSARIAL_CHOICES = ("paper", *ADVERSARIAL)


def adversarial_kinds(choice: str) -> dict[str, str]:
    """Which adversarial loss each phase uses: "paper" = LSGAN unpaired, NLL paired (Eq. 2)."""
    if choice == "paper":
        return {"unpaired": "lsgan", "paired": "nll"}
    if choice in ADVERSARIAL:
        return {"unpaired": choice, "paired": choice}
    raise ValueError(f"unknown adversarial loss {choice!r}: use paper, lsgan or nll")
