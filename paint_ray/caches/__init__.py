"""Caches: work done once per node and found again by content, never by a name or a path.

`entry` is what every entry shares: content keys through `identity.digest` with the cache's version and
mode in every key, one builder per node (a file lock), atomic builds (temporary folder or file, fsync,
rename) and files that cannot be read set aside. On top of it: `eval` (each eval split decoded and resized
once into uint8 tensors), `train` (training images at their full field of view, for the reference crop)
and `heads` (zero-shot heads by model digest and task key).

May import: errors, identity, paths, storage, devices, tasks, data, models, weights
"""
