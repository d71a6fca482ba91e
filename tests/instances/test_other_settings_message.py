"""Finished instances made with other settings are refused by a message naming what differs,
whichever side a setting is on (a key this version does not know included)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from geoseg.errors import OutputExistsError
from geoseg.instances.stage import InstanceSettings, keep_other_instances


def _target(settings: dict) -> SimpleNamespace:
    record = {"status": "complete", "count": 291, "settings": settings}
    return SimpleNamespace(url="/data/out.zarr", attrs=lambda: {"instances": record})


def test_a_recorded_key_this_version_does_not_know_is_named():
    """It said "made with other settings ()": only the current settings' keys were compared."""
    settings = InstanceSettings()
    target = _target({**settings.record(), "min_area": 4})
    with pytest.raises(OutputExistsError) as info:
        keep_other_instances(target, settings, overwrite=False)
    assert "made with other settings (min_area 4 -> (not set))" in str(info.value)


def test_a_requested_key_the_record_lacks_and_a_changed_value_are_named():
    settings = InstanceSettings(connectivity=2)
    recorded = {k: v for k, v in InstanceSettings().record().items() if k != "polygons"}
    with pytest.raises(OutputExistsError) as info:
        keep_other_instances(_target(recorded), settings, overwrite=False)
    assert ("(connectivity 1 -> 2, polygons (not set) -> True)" in str(info.value))


def test_the_same_settings_or_overwrite_are_let_through():
    settings = InstanceSettings()
    keep_other_instances(_target(settings.record()), settings, overwrite=False)
    keep_other_instances(_target({**settings.record(), "min_area": 4}), settings, overwrite=True)
