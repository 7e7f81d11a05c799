import pytest

from .helpers.tiny import tiny_splits as _tiny_splits


@pytest.fixture(scope="session")
def tiny_splits():
    """A small synthetic train/dev/test triple (60/30/30 images)."""
    return _tiny_splits()
