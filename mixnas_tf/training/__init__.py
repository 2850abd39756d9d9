"""Training: the compiled steps (trainer.py), the sliced optimiser and schedules
(optim.py), the loop (loop.py), checkpoints (checkpoint.py) and run-time settings
(runtime.py) that every command shares."""
