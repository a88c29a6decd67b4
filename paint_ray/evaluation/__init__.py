"""The sweep engine: weights move to where the eval data is, and θα is evaluated there.

`evaluator` holds one model's θ0, its θ1s, heads and splits on ONE device and evaluates cells (weights, α,
task, split); `host` is one device's worth of evaluators (what a Ray actor wraps) and its `inventory`;
`streaming` serves batches resident or streamed from host memory; `memory` budgets the bytes an
evaluator holds (data and weights); `placement` puts eval data on evaluators by work; `plan` prints where
a study's data and weights would go; `analysis` measures drift (CKA, weight distance); `weight_set` names
the weights a sweep evaluates. Plain torch: Ray is imported only in `distributed`.

May import: errors, identity, paths, storage, devices, tasks, data, models, caches, weights
"""
