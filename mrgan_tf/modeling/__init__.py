"""The model: modes, batch layout, MRGAN (train_step = Algorithm 1), networks, losses, augment, schedule."""
