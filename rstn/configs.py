"""Config fields that the records outlive: what a missing field meant, and which fields cannot move a result.

A run's record (run.json) keeps its config as a dict. When the code later gains a field, old records lack
it; compared naively they look like another config, and a finished run would be retrained. Each field
therefore declares, beside its default, how an old record is read:

    lr: float = 5e-4                             # absent in an old record: the default (nothing changed)
    gru_learn_init: bool = added(True, absent=False)  # absent: what the code did before the field existed
    channels_last: bool = neutral(True)          # speed or rounding only: never compared

`comparable_values(cls, values)` applies both rules to one config dict; `differences` lists what really
differs between two. This module imports nothing of rstn, so that every config dataclass can use it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

ABSENT = "rstn_absent"  # dataclass field metadata: the value a record without the field stands for
NEUTRAL = "rstn_neutral"  # metadata: True for a field that changes speed or float rounding, never the protocol
_MISSING = object()


def added(default: Any, *, absent: Any) -> Any:
    """A field added after records existed whose default changed behaviour: records that lack it ran as
    `absent` (e.g. the fixed zero GRU state before `gru_learn_init`)."""
    return dataclasses.field(default=default, metadata={ABSENT: absent})


def neutral(default: Any) -> Any:
    """A field that changes speed or float rounding only: two runs that differ in it have the same config."""
    return dataclasses.field(default=default, metadata={NEUTRAL: True})


def _json(value: Any) -> Any:
    """As the value comes back from run.json (tuples become lists)."""
    return json.loads(json.dumps(value))


def _absent_value(f: dataclasses.Field) -> Any:
    if ABSENT in f.metadata:
        return _json(f.metadata[ABSENT])
    if f.default is not dataclasses.MISSING:
        return _json(f.default)
    return _MISSING  # a required field: absent stays absent (and differs from any value)


def neutral_fields(cls: type) -> tuple[str, ...]:
    """Names of the fields of dataclass `cls` declared with `neutral`."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get(NEUTRAL))


def filled(cls: type, values: Mapping) -> Any:
    """The dataclass `cls` a record's config dict describes, its missing fields filled with what they stood
    for (lists back to tuples, as run.json stores them). Raises TypeError for a field `cls` no longer has."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {name: values[name] if name in values else _absent_value(f) for name, f in fields.items()}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items() if v is not _MISSING}
    return cls(**kwargs, **{k: v for k, v in values.items() if k not in fields})


def comparable_values(cls: type, values: Mapping) -> dict:
    """A config dict of dataclass `cls` as it is compared: missing fields filled with what they stood for,
    neutral fields dropped. Keys that `cls` no longer has are kept (they differ from their absence)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {k: v for k, v in values.items() if k not in fields}
    for name, f in fields.items():
        if f.metadata.get(NEUTRAL):
            continue
        value = values[name] if name in values else _absent_value(f)
        if value is not _MISSING:
            out[name] = value
    return out


def differences(cls: type, old: Mapping, new: Mapping, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted name, old value, new value) of every compared field that differs; absent shows as None."""
    a, b = comparable_values(cls, old), comparable_values(cls, new)
    return [(f"{prefix}{k}", a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in a or k not in b or a[k] != b[k]]
