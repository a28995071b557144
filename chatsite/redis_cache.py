"""Django's Redis cache, with one Redis client (and so one connection pool) per process."""

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property

# The client of each (servers, options), shared by every request of the process.
_clients: dict[str, object] = {}


class _OneRedisClientPerPool(RedisCacheClient):
    """Django's cache client, with one redis-py client per connection pool instead of a new one per command.

    A redis-py client copies its 170 response callbacks when it is made: as
    much CPU as the command it was made for. The client is thread-safe (it
    takes a connection from the pool for each command).
    """

    def __init__(self, servers, **options):
        super().__init__(servers, **options)
        self._redis_clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        if index not in self._redis_clients:
            self._redis_clients[index] = self._client(connection_pool=self._get_connection_pool(write))
        return self._redis_clients[index]


class SharedPoolRedisCache(RedisCache):
    """Django's RedisCache, but every request uses the process's one client.

    Django makes its cache objects per async context, so each request had a
    client of its own, with a pool of its own: every request opened a new
    connection to Redis (a TCP handshake and redis-py's CLIENT SETINFO, which
    reads the package's metadata from disk) and left it to the garbage
    collector. redis-py's pool is thread-safe and replaces a connection that
    a Redis restart broke, so one per process serves all its requests.
    """

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _OneRedisClientPerPool

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


class RateCounterCache(SharedPoolRedisCache):
    """The cache django-ratelimit counts in (RATELIMIT_USE_CACHE): a request is counted in one round trip.

    django-ratelimit counts a request in a window with add(key, 1, timeout)
    and, when the key is there already, incr(key): two round trips for each
    window of each request, on every message and /v1 call. Here add() counts
    at once (INCRBY, and the timeout if the key is new) and says whether the
    key was new; the incr() that django-ratelimit then makes for that key
    answers the count add() got, without counting again. Other uses of add
    (a value that is not a positive count) and of incr are Django's.
    """

    _COUNT = (
        "local count = redis.call('INCRBY', KEYS[1], ARGV[1]) "
        "if count == tonumber(ARGV[1]) and tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end "
        "return count"
    )

    def __init__(self, server, params):
        super().__init__(server, params)
        # The count of the last add() that found its key, for the incr() that follows it. Django makes a cache
        # object per thread and async context, so no other request's add comes between.
        self._counted: tuple[str, int] | None = None

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        if type(value) is not int or value <= 0:
            return super().add(key, value, timeout, version)
        key = self.make_and_validate_key(key, version=version)
        seconds = self.get_backend_timeout(timeout)
        count = self._cache.get_client(key, write=True).eval(self._COUNT, 1, key, value, seconds or 0)
        if count == value:
            return True
        self._counted = (key, count)
        return False

    def incr(self, key, delta=1, version=None):
        counted, self._counted = self._counted, None
        if counted is not None and counted[0] == self.make_and_validate_key(key, version=version):
            return counted[1]
        return super().incr(key, delta, version)
