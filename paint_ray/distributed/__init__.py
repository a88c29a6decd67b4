"""Ray placement and scheduling of the core (which itself never imports Ray).

May import: errors, identity, paths, storage, devices, tasks, data, models, caches, weights, training, evaluation, config, results, backends, faults
"""
