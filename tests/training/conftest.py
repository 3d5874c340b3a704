"""Fixtures for training tests."""

import pytest

from encore.schema import FeatureSpec
from tests.factories import MIXED_FIELDS, make_mixed_frame


@pytest.fixture(scope="session")
def mixed_data():
    train, valid = make_mixed_frame(4000, 1), make_mixed_frame(1500, 2)
    return FeatureSpec.fit(train, MIXED_FIELDS), train, valid
