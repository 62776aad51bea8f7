"""A callback that tests put into a run (--trainer.callbacks+=tests.gpu.probe.Probe) to
learn where and how it trained."""

import json
from pathlib import Path

import lightning as L
import torch


class Probe(L.Callback):
    """Writes to `path`, as JSON: the module's device, the weights' dtype, the dtype that
    the first linear layer computed in during training (bfloat16 under bf16-mixed), the
    strategy and its process group's backend, the steps run and the peak GPU memory."""

    def __init__(self, path: str):
        self.path = path
        self.facts: dict = {}
        self._hook = None

    def on_train_start(self, trainer, pl_module):
        dist = torch.distributed
        grouped = dist.is_available() and dist.is_initialized()
        self.facts.update(
            device=str(pl_module.device),
            weights_dtype=str(next(pl_module.parameters()).dtype),
            precision=str(trainer.precision),
            strategy=type(trainer.strategy).__name__,
            world_size=trainer.world_size,
            backend=dist.get_backend() if grouped else None,
        )
        linear = next(m for m in pl_module.modules() if type(m).__name__ in ("Linear", "Conv1D"))
        self._hook = linear.register_forward_hook(self._seen)

    def _seen(self, module, args, output):
        self.facts.setdefault("matmul_dtype", str(output.dtype))

    def on_train_end(self, trainer, pl_module):
        if self._hook is not None:
            self._hook.remove()
        self.facts["steps"] = trainer.global_step
        if pl_module.device.type == "cuda":
            self.facts["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        Path(self.path).write_text(json.dumps(self.facts))
