"""The learning loop: the step driver (epochs, batches, resume), rollouts, the training step with its
update strategies, and evaluation."""
