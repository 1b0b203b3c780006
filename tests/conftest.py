import torch

# One intra-op thread: the tests' nets are tiny, and the training loop's data thread, Qt and
# pytest-xvfb share the two cores of CI; more threads made tiny-net steps up to 35x slower there.
torch.set_num_threads(1)
