"""Where Feast's online store lives: the workspace's SQLite file (the default) or a Redis server.

`tastyrec features --online-store redis://HOST:PORT[/DB]` switches a workspace to Redis and the
workspace remembers it (<home>/settings.json); `--online-store sqlite` switches back. The choice
is written into the generated feature_store.yaml, which materialisation, the engine and the
service read. Feast's Redis keys name the project ("tastyrec"), not the workspace: give each
workspace its own database number on a shared server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tastyrec.config import Workspace

SQLITE = "sqlite"
SETTING = "online_store"  # the key in the workspace's settings
# a host name or IPv4 address: Feast's connection string ("host:port,db=N") has no form for IPv6
REDIS_URL = re.compile(r"redis://(?P<host>[A-Za-z0-9_.-]+):(?P<port>\d{1,5})(?:/(?P<db>\d{1,2}))?/?")
SQLITE_FILE = "data/online_store.db"  # in the features run's folder
SQLITE_YAML = f"""\
online_store:
  type: sqlite
  path: {SQLITE_FILE}
"""
REDIS_YAML = """\
online_store:
  type: redis
  connection_string: "{host}:{port},db={db}"
"""


class OnlineStoreError(ValueError):
    """An online store that cannot be used: a malformed URL, or a Redis server that does not answer."""


@dataclass(frozen=True)
class OnlineStore:
    """SQLite (host None) or one Redis database."""

    host: str | None = None
    port: int = 6379
    db: int = 0

    @classmethod
    def parse(cls, url: str) -> "OnlineStore":
        """"sqlite" or redis://HOST:PORT[/DB]; anything else is refused with the accepted forms."""
        if url.strip().lower() == SQLITE:
            return cls()
        match = REDIS_URL.fullmatch(url.strip())
        if not match or not 0 < int(match["port"]) < 65536:
            raise OnlineStoreError(f"online store {url!r}: expected 'sqlite' or redis://HOST:PORT[/DB] "
                                   "(e.g. redis://127.0.0.1:6379/0)")
        return cls(match["host"], int(match["port"]), int(match["db"] or 0))

    @property
    def is_redis(self) -> bool:
        return self.host is not None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}" if self.is_redis else SQLITE

    def yaml(self) -> str:
        """The online_store section of feature_store.yaml."""
        return REDIS_YAML.format(host=self.host, port=self.port, db=self.db) if self.is_redis else SQLITE_YAML

    def check(self) -> None:
        """Raise OnlineStoreError unless the store answers (a Redis PING; SQLite always does)."""
        if not self.is_redis:
            return
        import redis

        try:
            redis.Redis(host=self.host, port=self.port, db=self.db, socket_connect_timeout=5).ping()
        except redis.RedisError as e:
            raise OnlineStoreError(f"the Redis online store at {self.url} does not answer: {e}") from None


def configured(ws: Workspace) -> OnlineStore:
    """The workspace's online store: what `features --online-store` remembered, else SQLite."""
    return OnlineStore.parse(ws.settings().get(SETTING, SQLITE))


def choose(ws: Workspace, url: str | None) -> OnlineStore:
    """The store a features run writes to, checked: `url`, or the remembered one if None."""
    store = configured(ws) if url is None else OnlineStore.parse(url)
    store.check()
    return store


def remember(ws: Workspace, store: OnlineStore) -> None:
    """Make `store` the workspace's online store (after a features run filled it)."""
    ws.remember(**{SETTING: store.url})
