import torch

# Two cores here; keep each test process from oversubscribing them.
torch.set_num_threads(2)
