"""Training: the parts of the stage loop, from one jitted step to resuming a preempted run.

- `train_step`: networks, optimizer and state from the config; the jitted SPMD train step.
- `run_context`: what the stages of one run share (`RunContext`), its inputs, how it stops.
- `resume`: a stage's checkpoints and loss history: saving, stopping, resuming.
- `selection`: model selection without ground truth: held-out loss, best step, early stop.
- `teacher_cache`: frozen teachers run once per training image instead of once per step.
- `pretrained`: networks taken from trained weights (`config.pretrained`).
- `monitoring`: log lines, TensorBoard scalars, progress and ETA while a run runs.
- `sharding`: the device mesh, shardings and the multi-process set-up.
"""
