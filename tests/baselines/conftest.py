import pytest

from ..helpers.bundles import random_bundle


@pytest.fixture
def make_bundle():
    return random_bundle
