"""What main.py needs around the science: the settings (`pipeline.settings`) and their checks
(`pipeline.checks`), the run folders (`pipeline.runs`), atomic writes (`pipeline.files`), the
hyperparameter search (`pipeline.search`, `search_space`, `search_outputs`) and a quiet,
useful console (`pipeline.console`).

Nothing here imports TensorFlow: a bad setting or a bad run folder is reported before it is.
"""
