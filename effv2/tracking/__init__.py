"""Experiment loggers of a training run (``logger=[csv,tensorboard,mlflow]``), written by rank 0.

Each logger follows one life: ``adopt`` (a resumed run continues the history of the run it
resumes), ``start``, ``log_step`` / ``log_epoch`` at global optimizer steps, ``state`` (stored in
every checkpoint, so a resume finds its run again) and ``finish`` with how the run ended.
"""
