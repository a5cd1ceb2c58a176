"""The Hugging Face hub as condense uses it: where it is, whether it answers, which commit a
revision is, and its failures as one line each.

Model and corpus loading go through the real clients (huggingface_hub, transformers, datasets),
which read ``HF_ENDPOINT`` (a mirror, default ``https://huggingface.co``), ``HF_HOME`` (the cache)
and ``HF_HUB_OFFLINE`` when they are imported. Inside :func:`hub_calls` the clients do not retry
a server error with back-off (huggingface_hub waits 23 s over five retries) and print no warnings:
the first 5xx answer ends the call with one line, and so does a dropped download once resuming it
makes no progress; what is already in the cache is still used.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import threading
import urllib.parse
from collections.abc import Iterator

from condense.errors import CondenseError

__all__ = ["DEFAULT_ENDPOINT", "HubUnavailable", "HubNotCached", "endpoint", "offline", "reachable", "hub_calls",
           "hub_error", "resolve_commit"]

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = ("1", "true", "yes", "on")


class HubUnavailable(CondenseError):
    """The hub answered with a server error (5xx): it is down or overloaded."""


class HubNotCached(CondenseError):
    """What was asked for is not in the cache, and the hub cannot be asked (offline, unreachable)."""


def endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT``, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or the older ``TRANSFORMERS_OFFLINE``) forbids network calls."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def reachable(timeout: float = 3.0) -> bool:
    """Whether the endpoint accepts a TCP connection within ``timeout`` seconds, on the port its
    URL names (default 443 for https, 80 for http): mirrors often serve plain http on other ports."""
    if offline():
        return False
    url = urllib.parse.urlparse(endpoint())
    try:
        port = url.port or (80 if url.scheme == "http" else 443)
    except ValueError:
        return False
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _cache() -> str:
    try:
        from huggingface_hub import constants

        return constants.HF_HUB_CACHE
    except ImportError:
        return os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")


def _why_not_reached() -> str:
    if offline():
        return "HF_HUB_OFFLINE is set (unset it to download)"
    return f"the hub at {endpoint()} does not answer (check HF_ENDPOINT, the network or a proxy)"


def _fail_on_server_error(response) -> None:
    """httpx response hook: a 5xx ends the call at once, instead of huggingface_hub's back-off."""
    if response.status_code >= 500:
        url = urllib.parse.urlsplit(str(response.request.url))
        raise HubUnavailable(
            f"the hub at {endpoint()} answered HTTP {response.status_code} to {response.request.method} {url.path}: "
            "it is down or overloaded; try again later, or set HF_HUB_OFFLINE=1 to use what is cached")


class _StalledResumes:
    """httpx request hook: huggingface_hub retries a download whose connection dropped up to five
    times, a second apart, while no byte arrives, resuming (``Range: bytes=N-``) after what it kept.
    The same file asked for again from the same offset means the last try brought nothing: the
    call ends there (the download stays resumable by the next command)."""

    def __init__(self) -> None:
        self._asked: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, request) -> None:
        wanted = request.headers.get("Range", "")
        url = str(request.url)
        if request.method != "GET" or "/resolve/" not in url or not re.fullmatch(r"(bytes=\d+-)?", wanted):
            return  # closed ranges are streaming reads (datasets reads a parquet footer more than once)
        with self._lock:
            stalled = (url, wanted) in self._asked
            self._asked.add((url, wanted))
        if stalled:
            raise _DownloadStalled(f"no progress downloading {urllib.parse.urlsplit(url).path} {wanted}".strip())


class _DownloadStalled(Exception):
    """A dropped download that resuming does not advance (reported by :func:`hub_error`)."""


@contextlib.contextmanager
def hub_calls(what: str, cache: str | None = None) -> Iterator[None]:
    """Hub calls made inside are quiet and fail fast; their errors become one-line CondenseErrors
    naming ``what`` (e.g. "model 'org/name' at revision 'main'"), what to check, and for what is
    not cached the cache folder (``cache``, default the hub cache)."""
    try:
        import huggingface_hub
        from huggingface_hub.utils import logging as hub_logging
    except ImportError:
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    verbosity, bars_off = hub_logging.get_verbosity(), are_progress_bars_disabled()
    hub_logging.set_verbosity_error()  # the retry warnings ("Retrying in 1s [Retry 1/5]") are noise here
    disable_progress_bars()
    session = huggingface_hub.get_session()
    hooked = hasattr(session, "event_hooks")  # httpx clients (huggingface_hub >= 1.0)
    ours = {"request": _StalledResumes(), "response": _fail_on_server_error}
    if hooked:
        hooks = session.event_hooks
        session.event_hooks = {kind: [*hooks[kind], ours[kind]] for kind in ("request", "response")}
    try:
        yield
    except (HubUnavailable, HubNotCached):
        raise
    except CondenseError as err:  # a loader's own line about a hub failure: the hub's says what to check
        better = hub_error(err.__context__, what, cache) if err.__context__ is not None else None
        if better is None:
            raise
        raise better from None
    except Exception as err:  # noqa: BLE001  (the clients raise many types; unknown ones keep their traceback)
        better = hub_error(err, what, cache)
        if better is None:
            raise
        raise better from None
    finally:
        if hooked:
            current = session.event_hooks
            session.event_hooks = {kind: [h for h in current[kind] if h is not ours[kind]] for kind in current}
        hub_logging.set_verbosity(verbosity)
        if not bars_off:
            enable_progress_bars()


def hub_error(err: BaseException, what: str, cache: str | None = None) -> CondenseError | None:
    """A one-line error for a failure of the hub clients (found anywhere in ``err``'s chain of
    causes), or None when the failure is not the hub's. ``cache``: where what is not cached would
    be (default the hub cache)."""
    from huggingface_hub import errors as hub_errors

    connect, transport = _transport_errors()
    not_cached = tuple(getattr(hub_errors, name) for name in ("RevisionResolutionError", "LocalEntryNotFoundError",
                                                               "OfflineModeIsEnabled") if hasattr(hub_errors, name))
    where = endpoint()
    for cause in _chain(err):
        if isinstance(cause, (HubUnavailable, HubNotCached)):
            return cause
        if isinstance(cause, hub_errors.GatedRepoError):
            return CondenseError(f"{what} is gated on {where}: request access on its page, then log in "
                                 "(`hf auth login`, or set HF_TOKEN)")
        if isinstance(cause, hub_errors.RevisionNotFoundError):
            return CondenseError(f"{what}: no such revision on {where}; give a branch, a tag or a full commit sha "
                                 "that exists")
        if isinstance(cause, hub_errors.RepositoryNotFoundError) or type(cause).__name__ == "DatasetNotFoundError":
            return CondenseError(f"{what}: no such repository on {where}; check the id (a private repository needs "
                                 "`hf auth login` or HF_TOKEN)")
        if isinstance(cause, hub_errors.HfHubHTTPError) and cause.response is not None:
            return CondenseError(f"the hub at {where} answered HTTP {cause.response.status_code} for {what}; try "
                                 "again later, or set HF_HUB_OFFLINE=1 to use what is cached")
        # (datasets reports an offline or unreachable hub as a bare ConnectionError)
        if isinstance(cause, not_cached + connect + (ConnectionError,)):
            return HubNotCached(f"cannot find {what} locally or on the Hugging Face hub: it is not in the cache "
                                f"({cache or _cache()}) and {_why_not_reached()}")
        if isinstance(cause, transport + (_DownloadStalled,)):
            how = "no byte arrived" if isinstance(cause, _DownloadStalled) else type(cause).__name__
            return CondenseError(f"the connection to the hub at {where} broke while downloading {what} ({how}); "
                                 "run the command again to resume, or set HF_HUB_OFFLINE=1 to use what is cached")
    return None


def _transport_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(connection refused, any transport failure) exception types of the HTTP clients loaded."""
    connect, transport = [], []
    for module, refused, broken in (("httpx2", "ConnectError", "TransportError"),
                                    ("httpx", "ConnectError", "TransportError"),
                                    ("requests", "ConnectionError", "RequestException")):
        if module in sys.modules:
            connect.append(getattr(sys.modules[module], refused))
            transport.append(getattr(sys.modules[module], broken))
    return tuple(connect), tuple(transport)


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def resolve_commit(repo_id: str, revision: str | None, what: str, repo_type: str = "model",
                   online: bool | None = None) -> tuple[str, bool]:
    """(the 40-hex commit ``revision`` of ``repo_id`` points to, whether only the cache may be used).

    Asks the hub when it answers (one request; the answer is recorded in the cache's ``refs/``, so
    the same revision resolves offline later), else the cache; a hub that answers with a server
    error falls back to the cache too. CondenseError (one line) for an unknown repository or
    revision, HubNotCached when neither the hub nor the cache knows the revision.
    """
    from huggingface_hub import HfApi

    if online is None:
        online = reachable()
    api = HfApi(endpoint=endpoint())
    with hub_calls(what):
        if online:
            try:
                if revision and re.fullmatch(r"[0-9a-f]{40}", revision):  # checked: a typo must not pass silently
                    return api.repo_info(repo_id, repo_type=repo_type, revision=revision).sha, False
                return api.resolve_revision(repo_id, repo_type=repo_type, revision=revision).resolved, False
            except HubUnavailable as down:
                try:
                    return api.resolve_revision(repo_id, repo_type=repo_type, revision=revision,
                                                local_files_only=True).resolved, True
                except Exception:  # noqa: BLE001  (not cached either: the server error is the news)
                    raise down from None
        return api.resolve_revision(repo_id, repo_type=repo_type, revision=revision, local_files_only=True).resolved, True
