"""Results are data: the Parquet record of every evaluated cell, the frontier and α selection read from it.

`store` appends and reads rows keyed by content; `selection` builds a frontier table and chooses α by a
rule; `robust` summarises frontiers so that they hold across seeds (gain at a drop budget, area, trends);
`study` holds what a study produced (each patched model, the study result).

May import: errors, identity, paths, storage, faults, models, evaluation, config
"""
