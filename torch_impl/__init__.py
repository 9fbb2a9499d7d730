"""torch_impl: the PyTorch training implementation that lmref mirrors file for file, key for key."""
