"""What the GPU tests share: the device they run on and the sizes they train.

They run on CUDA (`make gpu-check`), or with REJOINDER_GPU_CHECK_DEVICE=cpu on the CPU at
tiny sizes, which proves the tests and the check's report without a GPU.
"""

import os

DEVICE = "cpu" if os.environ.get("REJOINDER_GPU_CHECK_DEVICE") == "cpu" else "cuda"
ON_GPU = DEVICE == "cuda"
ACCELERATOR = "gpu" if ON_GPU else "cpu"
SMALL = "small" if ON_GPU else "tiny"
"""The GPT-2 size trained: `small` on a GPU, `tiny` on the CPU."""
