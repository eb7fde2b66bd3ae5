import os

import torch

# Without a GPU the Triton kernels run in Triton's interpreter; the switch must be set before anything
# (transformers, the engine) first imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
