"""Identity is content: the one digest function behind every key that decides reuse.

Result rows, fine-tuned θ1s, zero-shot heads, what an evaluator holds and MLflow runs are all keyed by
digests of what they were computed from (weights, data fingerprints, recipe, precision, schema version),
never by a spec string, a path or a task name, so a rerun on changed inputs recomputes.
"""
from __future__ import annotations

import hashlib
import json

# Bumped whenever a result row's meaning changes (what an accuracy was computed on, or how).
SCHEMA_VERSION = "2"


def digest(obj, length: int = 16) -> str:
    """A stable hex digest of any JSON-able object (dict keys sorted; other objects by str())."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:length]


def task_key(task) -> str:
    """What an accuracy on `task` depends on besides the model: its data, its head's prompts and, for a
    multiple-choice task, which answers each example is scored against."""
    parts = [task.name, task.fingerprint, list(task.classnames), list(task.templates)]
    groups = getattr(task, "answer_groups", None)
    if groups is not None:      # appended only when present, so ordinary tasks keep the keys they had
        parts.append(["answer_groups", [int(g) for g in groups]])
    return digest(parts)
