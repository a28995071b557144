"""The site's Redis cache (chatsite/redis_cache.py), as the rate limits use it: django-ratelimit counts a window
with add, then incr, on every request."""

import pytest
from django.core.cache import caches

from chatsite.redis_cache import SharedPoolRedisCache


@pytest.fixture
def cache():
    cache = caches["default"]
    if not isinstance(cache, SharedPoolRedisCache):
        pytest.skip("needs Redis (make test starts one)")
    return cache


def test_incr_counts_on_from_the_stored_value_and_keeps_its_expiry(cache):
    assert cache.add("hits", 1, 60)

    assert cache.incr("hits") == 2
    assert cache.incr("hits", 5) == 7
    assert cache.get("hits") == 7
    key = cache.make_key("hits")
    assert 0 < cache._cache.get_client(key).ttl(key) <= 60  # the window still ends when it began to


def test_incr_of_a_key_that_is_not_there_refuses_and_creates_nothing(cache):
    with pytest.raises(ValueError):
        cache.incr("never-set")

    assert cache.get("never-set") is None
    assert not cache.has_key("never-set")


def test_decr_still_counts_down(cache):
    cache.set("left", 10)

    assert cache.decr("left", 3) == 7
