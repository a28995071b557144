"""Django's Redis cache, with one Redis client (and so one connection pool) per process."""

from django.core.cache.backends.redis import RedisCache
from django.utils.functional import cached_property

# The client of each (servers, options), shared by every request of the process.
_clients: dict[str, object] = {}


class SharedPoolRedisCache(RedisCache):
    """Django's RedisCache, but every request uses the process's one client.

    Django makes its cache objects per async context, so each request had a
    client of its own, with a pool of its own: every request opened a new
    connection to Redis (a TCP handshake and redis-py's CLIENT SETINFO, which
    reads the package's metadata from disk) and left it to the garbage
    collector. redis-py's pool is thread-safe and replaces a connection that
    a Redis restart broke, so one per process serves all its requests.
    """

    @cached_property
    def _cache(self):
        key = repr((self._servers, sorted(self._options.items())))
        if key not in _clients:
            _clients[key] = self._class(self._servers, **self._options)
        return _clients[key]

    # Django's incr asks whether the key exists, then adds: two round trips for every rate-limit window of
    # every request (django-ratelimit counts with add, then incr). One script does both, at once.
    _INCR_IF_THERE = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end"

    def incr(self, key, delta=1, version=None):
        key = self.make_and_validate_key(key, version=version)
        client = self._cache.get_client(key, write=True)
        value = client.eval(self._INCR_IF_THERE, 1, key, delta)
        if value is None:
            raise ValueError(f"Key '{key}' not found.")
        return value
