"""Reporting: what a person reads or looks at, and MLflow, the view of the record.

`text` formats tables for the terminal; `plots` draws frontiers and the scaling summary; `published` holds
the figures others published and `published_report` sets ours beside them (pure pandas); `tracking` owns
every MLflow call (runs, metrics, artifacts, models, loading a patched model back), with `mlflow_model`
writing the patched model's MLflow Model folder; `transfer` is the broad-transfer matrix.

May import: errors, identity, paths, storage, devices, tasks, data, models, caches, weights, evaluation, config, results
"""
