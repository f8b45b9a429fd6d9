"""What main.py needs around the science: the settings (`pipeline.settings`), the run folders
(`pipeline.runs`) and a quiet, useful console (`pipeline.console`).

Nothing here imports TensorFlow: a bad setting or a bad run folder is reported before it is.
"""
