"""Training engine: optimizers, schedules, the compiled step, evaluation, checkpoints, metrics."""
