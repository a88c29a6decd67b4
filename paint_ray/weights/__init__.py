"""Weights as data: interpolation, multi-task merges, storage by name, and the patched-model folder.

`interpolate` forms θα in place; `merging` combines task vectors (average, task arithmetic, TIES, ...);
`store` publishes weight files to the study's storage and fetches them, verified by digest; `patched`
writes and reads the patched open_clip folder with its heads.

May import: errors, identity, paths, devices, tasks, data, models
"""
