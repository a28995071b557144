"""The site's Redis cache (chatsite/redis_cache.py), as the rate limits use it: django-ratelimit counts a window
with add, then incr, on every request."""

import time

import pytest
from django.core.cache import caches
from django_ratelimit.core import get_usage

from chatsite.redis_cache import RateCounterCache, SharedPoolRedisCache


def redis_cache(alias: str, kind: type):
    """The cache of this alias, if it is on Redis (as `kind`); else the test is skipped."""
    found = caches[alias]
    if not isinstance(found, kind):
        pytest.skip("needs Redis (make test starts one)")
    return found


@pytest.fixture
def cache():
    return redis_cache("default", SharedPoolRedisCache)


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


def test_commands_go_through_one_redis_client_per_connection_pool(cache):
    """Django made a redis-py client for each command, and a client copies its 170 response callbacks when made:
    as much CPU as the command. One is made per connection pool (one server: one pool), and used from then on."""
    made = {id(cache._cache.get_client(key, write=write)) for key in ("a", "b") for write in (False, True)}
    cache.set("shared", 1)

    assert len(made) == 1
    assert cache.get("shared") == 1


def test_decr_still_counts_down(cache):
    cache.set("left", 10)

    assert cache.decr("left", 3) == 7


@pytest.fixture
def counter_cache():
    return redis_cache("ratelimit", RateCounterCache)


def calls_of(counters, command: str) -> int:
    stats = counters._cache.get_client(None).info("commandstats")
    return stats.get(f"cmdstat_{command}", {}).get("calls", 0)


def test_django_ratelimit_counts_each_request_once_in_one_round_trip(counter_cache, rf):
    request = rf.get("/")
    before = {command: calls_of(counter_cache, command) for command in ("eval", "incr", "set", "exists")}

    usages = [get_usage(request, group="counted", key="ip", rate="3/m", increment=True) for _ in range(5)]

    assert [usage["count"] for usage in usages] == [1, 2, 3, 4, 5]
    assert [usage["should_limit"] for usage in usages] == [False, False, False, True, True]
    after = {command: calls_of(counter_cache, command) for command in before}
    assert after["eval"] - before["eval"] == 5  # one script a request (its INCRBY counts apart, as the script's)
    assert all(after[command] == before[command] for command in ("incr", "set", "exists"))


def test_a_window_counts_from_one_again_once_its_key_expires(counter_cache):
    assert counter_cache.add("window", 1, 1)
    assert not counter_cache.add("window", 1, 1)
    assert counter_cache.incr("window") == 2  # the count add() made, not a third
    key = counter_cache.make_key("window")
    assert 0 < counter_cache._cache.get_client(key).ttl(key) <= 1

    time.sleep(1.1)

    assert counter_cache.add("window", 1, 1)
    assert counter_cache.get("window") == 1


def test_other_values_and_keys_are_added_and_counted_as_by_djangos_cache(counter_cache):
    assert counter_cache.add("flag", "on", 60)
    assert not counter_cache.add("flag", "off", 60)
    assert counter_cache.get("flag") == "on"
    counter_cache.set("plain", 10)
    counter_cache.add("other", 1, 60)
    counter_cache.add("other", 1, 60)  # found: its count waits for incr("other")...
    assert counter_cache.incr("plain") == 11  # ...which incr of another key does not answer
