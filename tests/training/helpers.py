"""Callbacks that tests put into a run with --trainer.callbacks+=…"""

import lightning as L


class CrashAt(L.Callback):
    """Dies after the given step, like a machine that loses power."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args, **kwargs):
        if trainer.global_step >= self.step:
            raise RuntimeError(f"simulated crash at step {trainer.global_step}")


class PoisonAt(L.Callback):
    """Makes the weights NaN after the given step, so the next loss is NaN."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, *args, **kwargs):
        if trainer.global_step == self.step:
            for p in pl_module.parameters():
                p.data.fill_(float("nan"))
