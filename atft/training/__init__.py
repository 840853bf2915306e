"""Training: the trainer loop, device handling, and the guards around it."""
