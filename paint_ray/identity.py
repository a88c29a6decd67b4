"""Identity is content: the one digest function behind every key that decides reuse.

Result rows, fine-tuned θ1s, zero-shot heads, what an evaluator holds and MLflow runs are all keyed by
digests of what they were computed from (weights, data fingerprints, recipe, precision, schema version),
never by a spec string, a path or a task name, so a rerun on changed inputs recomputes.

May import: nothing in paint_ray
"""
from __future__ import annotations

import hashlib
import json

# Bumped whenever a result row's meaning changes (what an accuracy was computed on, or how).
SCHEMA_VERSION = "3"   # 3: task keys hash the data fingerprint, its preparation and prompts, no name


def digest(obj, length: int = 16) -> str:
    """A stable hex digest of any JSON-able object (dict keys sorted; other objects by str())."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:length]
