"""The site's Redis cache (chatsite/redis_cache.py) keeps Django's cache semantics where the rate limits rely on
them: incr adds to a counter that exists, keeps its timeout, and refuses one that does not."""

import pytest
from django.core.cache import caches

from chatsite.redis_cache import SharedPoolRedisCache


@pytest.fixture
def redis_cache() -> SharedPoolRedisCache:
    cache = caches["default"]
    assert isinstance(cache, SharedPoolRedisCache), "the suite runs with REDIS_URL set"
    cache.clear()
    return cache


def seconds_left(cache: SharedPoolRedisCache, key: str) -> int:
    return cache._cache.get_client().ttl(cache.make_and_validate_key(key))


def test_incr_adds_to_a_counter_and_keeps_its_timeout(redis_cache):
    assert redis_cache.add("rl:a", 1, 60)

    assert redis_cache.incr("rl:a") == 2
    assert redis_cache.incr("rl:a", 5) == 7
    assert redis_cache.get("rl:a") == 7
    assert 0 < seconds_left(redis_cache, "rl:a") <= 60


def test_incr_of_a_counter_that_is_not_there_is_refused_and_creates_nothing(redis_cache):
    with pytest.raises(ValueError, match="not found"):
        redis_cache.incr("rl:missing")

    assert redis_cache.get("rl:missing") is None
    assert seconds_left(redis_cache, "rl:missing") == -2  # Redis: no such key
