"""The key registry: every key name docenrich writes belongs to a documented family."""
from __future__ import annotations

import string

from docenrich import keys


def sample(pattern: str) -> str:
    names = [field for _, field, _, _ in string.Formatter().parse(pattern) if field]
    return pattern.format(**{name: "x1" for name in names})


def test_every_key_constant_has_a_family():
    constants = {name: value for name, value in vars(keys).items() if name.endswith("_KEY")}
    assert len(constants) >= 10
    for name, pattern in constants.items():
        assert keys.family_of(sample(pattern)) is not None, name


def test_growing_families_must_expire_fixed_ones_need_not():
    assert keys.undocumented({"docenrich:lease:d:1:0": 30, "docenrich:heartbeats": -1, "docs:6": -1}) == []
    assert keys.undocumented({"docenrich:staged:d:1:0": -1}) == ["docenrich:staged:d:1:0"]
    assert keys.undocumented({"someone-elses-key": 100}) == ["someone-elses-key"]
    assert keys.undocumented({"celery-task-meta-abc": -1}) == ["celery-task-meta-abc"]
