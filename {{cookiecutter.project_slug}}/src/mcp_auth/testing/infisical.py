"""A loopback fake of the two Infisical endpoints the Infisical store uses, for tests.

It speaks Infisical's documented wire format (checked against the server source):

- ``POST /api/v1/auth/universal-auth/login`` ``{clientId, clientSecret}`` ->
  200 ``{accessToken, expiresIn, accessTokenMaxTTL, tokenType: "Bearer"}``;
  wrong credentials -> 401 ``{reqId, statusCode, message: "Invalid credentials", error}``.
- ``GET /api/v4/secrets/{secretName}?projectId=&environment=&secretPath=`` with
  ``Authorization: Bearer <token>`` -> 200 ``{"secret": {secretKey, secretValue, ...}}``;
  unknown secret or folder -> 404 ``NotFound``; revoked or unknown token -> 401; expired token
  -> 403 ``{"error": "TokenError", "message": "Your token has expired. Please re-authenticate."}``;
  ``x-api-key`` is rejected (Infisical removed API keys).

Start it in a thread and point the store at ``fake.url``::

    with FakeInfisical(project_id="proj-1") as fake:
        fake.set_secret("CODA_API_TOKEN", "value")
        ...
        fake.fail(500, times=1)       # the next request answers 500
        fake.delay = 1.0              # answer slowly
        fake.go_down(); fake.come_up()  # refuse connections, then listen again on the same port
        fake.expire_tokens()          # issued tokens now get 403 TokenError
        fake.revoke_tokens()          # issued tokens now get 401
        assert fake.login_count == 1 and fake.read_count == 1

Standard library only, so generated projects can use it without extra test dependencies.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

LOGIN_PATH = "/api/v1/auth/universal-auth/login"
SECRETS_PREFIX = "/api/v4/secrets/"

Endpoint = Literal["login", "read"]

_ERROR_NAMES = {
    400: "BadRequest",
    401: "UnauthorizedError",
    403: "PermissionDenied",
    404: "NotFound",
    422: "ValidationFailure",
    429: "RateLimitExceeded",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it. Bodies are not kept (the login body holds the secret)."""

    method: str
    raw_path: str  # as sent on the wire, still percent-encoded
    path: str  # decoded
    query: dict[str, str]
    headers: dict[str, str]

    @property
    def endpoint(self) -> Endpoint | None:
        if self.path == LOGIN_PATH:
            return "login"
        if self.path.startswith(SECRETS_PREFIX):
            return "read"
        return None


@dataclass
class _Failure:
    status: int
    remaining: int | None  # None: until recover()
    endpoint: Endpoint | None


class FakeInfisical:
    """A fake Infisical server on 127.0.0.1 with knobs for every failure the store handles."""

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        project_id: str = "fake-project-id",
        environment: str = "prod",
        token_ttl: int = 7200,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.project_id = project_id
        self.environment = environment
        self.token_ttl = token_ttl  # expiresIn of issued tokens; 0 = no expiry, as in Infisical
        self.delay = 0.0  # seconds to wait before answering any request
        self.deny_read = False  # answer reads with 403 PermissionDenied (identity lacks access)
        self.requests: list[RecordedRequest] = []
        self._secrets: dict[tuple[str, str, str], str] = {}
        self._folders: set[tuple[str, str]] = {(environment, "/")}
        self._tokens: dict[str, float | None] = {}  # token -> expiry (monotonic) or None
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._recorded = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # ----- lifecycle ------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """The server's settings for an Infisical store reading from this fake (universal auth)."""
        return {
            "MCP_TOKEN_STORE": "infisical",
            "INFISICAL_HOST": self.url,
            "INFISICAL_CLIENT_ID": self.client_id,
            "INFISICAL_CLIENT_SECRET": self.client_secret,
            "INFISICAL_PROJECT_ID": self.project_id,
            "INFISICAL_ENVIRONMENT": self.environment,
            **extra,
        }

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("FakeInfisical is not started")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FakeInfisical:
        self._stopping.clear()
        self._listen()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a delay
        self._close()

    def __enter__(self) -> FakeInfisical:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def go_down(self) -> None:
        """Stop listening: connections are refused until come_up()."""
        self._close()

    def come_up(self) -> None:
        """Listen again on the same port."""
        self._listen()

    # ----- data -----------------------------------------------------------------------------

    def set_secret(self, name: str, value: str, *, environment: str | None = None, path: str = "/") -> None:
        env, folder = environment or self.environment, _folder(path)
        with self._lock:
            self._secrets[(env, folder, name)] = value
            self._folders.add((env, folder))

    def delete_secret(self, name: str, *, environment: str | None = None, path: str = "/") -> None:
        with self._lock:
            self._secrets.pop((environment or self.environment, _folder(path), name), None)

    def issue_token(self, ttl: int | None = None) -> str:
        """A valid access token, as a login would return (e.g. to use as INFISICAL_API_KEY)."""
        ttl = self.token_ttl if ttl is None else ttl
        token = "fake-at." + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl if ttl > 0 else None
        return token

    # ----- failure controls -----------------------------------------------------------------

    def fail(self, status: int, *, times: int | None = None, endpoint: Endpoint | None = None) -> None:
        """Answer the next ``times`` requests (all when None) to ``endpoint`` (any when None)
        with ``status`` and Infisical's error body."""
        with self._lock:
            self._failures.append(_Failure(status, times, endpoint))

    def recover(self) -> None:
        """Undo fail(), delay and deny_read."""
        with self._lock:
            self._failures.clear()
        self.delay = 0.0
        self.deny_read = False

    def expire_tokens(self) -> None:
        """Every token issued so far is expired: Infisical answers 403 TokenError."""
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = 0.0

    def revoke_tokens(self) -> None:
        """Every token issued so far is revoked: Infisical answers 401."""
        with self._lock:
            self._tokens.clear()

    # ----- counters -------------------------------------------------------------------------

    def count(self, endpoint: Endpoint) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.endpoint == endpoint)

    @property
    def login_count(self) -> int:
        return self.count("login")

    @property
    def read_count(self) -> int:
        return self.count("read")

    def wait_for(self, endpoint: Endpoint, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` requests to ``endpoint`` have been answered-to (their answer is
        decided, possibly still delayed). From async tests: ``await asyncio.to_thread(...)``."""
        with self._recorded:
            return self._recorded.wait_for(
                lambda: sum(1 for r in self.requests if r.endpoint == endpoint) >= count, timeout
            )

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    # ----- request handling (handler threads) -----------------------------------------------

    def _handle(self, request: RecordedRequest, body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            failure = self._take_failure(request.endpoint)
        if failure is not None:
            message = "Something went wrong" if failure >= 500 else "Simulated failure"
            answer = failure, _error(failure, message)
        elif request.method == "POST" and request.path == LOGIN_PATH:
            answer = self._login(body)
        elif request.method == "GET" and request.endpoint == "read":
            answer = self._read(request)
        else:
            answer = 404, _error(404, f"Route {request.method}:{request.path} not found")
        # The answer is decided on arrival and delivered late, like a slow link: a secret
        # changed during the delay is not in this answer. Recorded once decided, so a test that
        # sees the request in ``requests`` knows which answer it will get.
        with self._recorded:
            self.requests.append(request)
            self._recorded.notify_all()
        if self.delay > 0 and self._stopping.wait(self.delay):
            return 503, _error(503, "shutting down")
        return answer

    def _take_failure(self, endpoint: Endpoint | None) -> int | None:
        for failure in self._failures:
            if failure.endpoint in (None, endpoint):
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                return failure.status
        return None

    def _login(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return 400, _error(400, "Body is not valid JSON")
        client_id, client_secret = payload.get("clientId"), payload.get("clientSecret")
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            return 422, _error(422, "clientId and clientSecret are required")
        if client_id != self.client_id or client_secret != self.client_secret:
            return 401, _error(401, "Invalid credentials")
        token = self.issue_token()
        return 200, {
            "accessToken": token,
            "expiresIn": self.token_ttl,
            "accessTokenMaxTTL": max(self.token_ttl, 2592000),
            "tokenType": "Bearer",
        }

    def _rejected_token(self, request: RecordedRequest) -> tuple[int, dict[str, Any]] | None:
        """Infisical's answer to a missing, unknown, revoked or expired access token, else None."""
        if "x-api-key" in request.headers and "authorization" not in request.headers:
            return 401, _error(401, "API keys are no longer supported; use a machine identity")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return 401, _error(401, "Failed to authenticate")
        with self._lock:
            known = token in self._tokens
            expiry = self._tokens.get(token)
        if not known:
            return 401, _error(401, "Failed to authenticate")
        if expiry is not None and time.monotonic() >= expiry:
            body = _error(403, "Your token has expired. Please re-authenticate.")
            body["error"] = "TokenError"
            return 403, body
        return None

    def _read(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        rejected = self._rejected_token(request)
        if rejected is not None:
            return rejected
        project, environment = request.query.get("projectId"), request.query.get("environment")
        if not project:
            return 422, _error(422, "projectId is required")
        if not environment:
            return 400, _error(400, "Missing environment")
        if project != self.project_id:
            return 404, _error(404, f"Project with ID '{project}' not found")
        if self.deny_read:
            return 403, _error(403, "You are not allowed to readValue on secrets")
        name, folder = request.path[len(SECRETS_PREFIX) :], _folder(request.query.get("secretPath", "/"))
        with self._lock:
            folder_exists = (environment, folder) in self._folders
            value = self._secrets.get((environment, folder, name))
        if not folder_exists:
            message = f"Folder with path '{folder}' in environment with slug '{environment}' not found"
            return 404, _error(404, message)
        if value is None:
            return 404, _error(404, f"Secret with name '{name}' not found")
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        secret_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{project}/{environment}{folder}/{name}"))
        return 200, {
            "secret": {
                "id": secret_id,
                "_id": secret_id,
                "workspace": project,
                "environment": environment,
                "version": 1,
                "type": "shared",
                "secretKey": name,
                "secretValue": value,
                "secretComment": "",
                "secretReminderNote": None,
                "secretReminderRepeatDays": None,
                "skipMultilineEncoding": False,
                "createdAt": now,
                "updatedAt": now,
                "secretValueHidden": False,
                "secretPath": folder,
                "tags": [],
                "secretMetadata": [],
            }
        }

    # ----- socket plumbing ------------------------------------------------------------------

    def _listen(self) -> None:
        if self._server is not None:
            return
        server = _Server(("127.0.0.1", self._port), _handler_for(self))
        self._port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-infisical", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread

    def _close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected in tests, not worth a traceback


def _handler_for(fake: FakeInfisical) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so go_down() refuses the very next request
        # instead of it riding on a pooled keep-alive connection.
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = RecordedRequest(
                method=self.command,
                raw_path=split.path,
                path=unquote(split.path),
                query=dict(parse_qsl(split.query, keep_blank_values=True)),
                headers={k.lower(): v for k, v in self.headers.items()},
            )
            status, payload = fake._handle(request, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output (and caplog) free of request lines

    return Handler


def _error(status: int, message: str) -> dict[str, Any]:
    return {
        "reqId": f"req-{uuid.uuid4().hex[:12]}",
        "statusCode": status,
        "message": message,
        "error": _ERROR_NAMES.get(status, "Error"),
    }


def _folder(path: str) -> str:
    # Infisical trims a trailing slash from secretPath.
    return "/" + path.strip().strip("/")
