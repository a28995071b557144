import pytest

from accounts.services import api_key_create


@pytest.fixture
def secret(alice, catalog) -> str:
    """A new API key of Alice's, as an app sends it."""
    return api_key_create(user=alice, name="app")[1]
