"""What every handler of `tfgrpo serve` shares: the served libraries, the upstream, the keys, the limits,
the metrics; who a request's key is, and which library it reaches. The handlers are methods of
`service.ProxyService`, one module per job (completions, feedback, admin)."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from ..core.files import is_sqlite_path
from ..errors import ConfigError, excerpt
from ..rewards.base import Reward
from ..tracking import Tracker
from ._upstream import Upstream
from .config import ProxyConfig
from .guards import bearer_token
from .limits import ServerLimits
from .metrics import ProxyMetrics, log_fields
from .openai_api import OpenAIError
from .served import OnlineLessons, ServedLibrary
from .tenants import Keys, Tenant

log = logging.getLogger("tfgrpo.serve")


@dataclass(frozen=True)
class Passthrough:
    """An upstream answer that goes to the client as it came (the upstream's own refusal)."""

    status: int
    body: bytes
    content_type: str


class ProxyState:
    """The proxy's shared state. `libraries`: name -> SQLite file (with `keys`, the keys file's; without,
    exactly one). `reward`: best-of-G with `config.group_size` choices. `lessons`: the lessons update in
    the background. `tracker`: each library's figures as it learns, and its file when the proxy stops."""

    def __init__(
        self,
        upstream_url: str,
        libraries: dict[str, str | Path],
        config: ProxyConfig = ProxyConfig(),
        *,
        keys: Keys | None = None,
        limits: ServerLimits = ServerLimits(),
        reward: Reward | None = None,
        upstream_api_key: str | None = None,
        upstream_model: str | None = None,
        lessons: OnlineLessons | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        if keys is None and len(libraries) != 1:
            raise ConfigError("without --keys tfgrpo serve serves exactly one library")
        for path in libraries.values():
            if not is_sqlite_path(path):
                raise ConfigError(
                    f"tfgrpo serve keeps its records in the library file, which must be SQLite (.db): {path}"
                )
        self.upstream_url = upstream_url
        self.library_paths = dict(libraries)
        self.config = config
        self.keys = keys
        self.limits = limits
        self.reward = reward
        self.upstream_api_key = upstream_api_key
        self.upstream_model = upstream_model
        self.online_lessons = lessons
        self.tracker = tracker
        self.metrics = ProxyMetrics()
        self.rng = random.Random(config.seed)
        self.libraries: dict[str, ServedLibrary] = {}
        self._upstream: Upstream | None = None

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            raise OpenAIError(503, "the proxy is not serving (starting or stopping)", code="not_ready")
        return self._upstream

    async def start(self) -> None:
        """Open every library (learning the groups formed before a restart) and the upstream client."""
        for name, path in self.library_paths.items():
            self.libraries[name] = ServedLibrary(
                name, path, self.config, self.metrics, self.tracker, self.online_lessons
            )
            await self.libraries[name].start()
        self._upstream = Upstream(
            self.upstream_url,
            self.metrics,
            retries=self.config.retries,
            timeout=self.config.timeout,
            max_output_bytes=self.config.max_output_bytes,
            api_key=self.upstream_api_key,
            model=self.upstream_model,
        )
        log.info("serving", extra=log_fields(upstream=self.upstream_url, libraries=sorted(self.libraries)))

    async def close(self) -> None:
        """After the requests in flight: commit what they queued, learn what it formed, close the files."""
        if self._upstream is not None:
            await self._upstream.close()
            self._upstream = None
        for lib in self.libraries.values():
            await lib.close()
        if self.online_lessons is not None:
            for backend in self.online_lessons.backends:
                backend.close()
        if self.tracker is not None:
            self.tracker.close()
        log.info("stopped", extra=log_fields(libraries=sorted(self.libraries)))

    # -- who asks, and what they reach

    def tenant(self, authorization: bytes | None) -> Tenant:
        """The key's tenant (without --keys, the admin of the one library); a 401 for a missing or unknown key."""
        if self.keys is None:
            return Tenant(next(iter(self.library_paths)), "admin")
        token = bearer_token(authorization)
        tenant = self.keys.lookup(token)
        if tenant is None:
            raise OpenAIError(
                401,
                "Incorrect API key provided" if token else "Missing API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"www-authenticate": "Bearer"},
            )
        return tenant

    def own_library(self, authorization: bytes | None) -> ServedLibrary:
        """The library a key serves its completions and feedback from."""
        tenant = self.tenant(authorization)
        if tenant.library is None:
            raise OpenAIError(403, "an operator key has no library to serve: use a tenant's key", code="forbidden")
        return self._served(tenant.library)

    def library_for(self, authorization: bytes | None, name: str, admin: bool) -> ServedLibrary:
        """Library `name`, when the key reaches it (`admin`: its admin endpoints); a 404 otherwise, so a key
        learns nothing of the libraries it does not reach."""
        tenant = self.tenant(authorization)
        if not tenant.may_read(name, admin=False) or name not in self.libraries:
            raise OpenAIError(404, f"no library {excerpt(name)} for this key", code="library_not_found")
        if not tenant.may_read(name, admin):
            raise OpenAIError(403, "this endpoint needs an admin key of the library", code="forbidden")
        return self.libraries[name]

    def require_operator(self, authorization: bytes | None) -> None:
        """Deployment-wide figures (every library's) go to an operator key only (without --keys: anyone on
        the loopback address the proxy is bound to)."""
        if self.keys is not None and not self.tenant(authorization).operator:
            raise OpenAIError(403, "this endpoint needs an operator key", code="forbidden")

    def _served(self, name: str) -> ServedLibrary:
        try:
            return self.libraries[name]
        except KeyError:
            raise OpenAIError(503, "the proxy is not serving (starting or stopping)", code="not_ready") from None
