"""Weights as data: interpolation, multi-task merges, storage by name, and the patched-model folder.

`interpolate` forms θα in place; `merging` combines task vectors (average, task arithmetic, TIES, ...);
`patched` writes and reads the patched open_clip folder with its heads. (Weight files travel between nodes
through paint_ray.storage.)

May import: errors, identity, paths, storage, devices, tasks, data, models
"""
