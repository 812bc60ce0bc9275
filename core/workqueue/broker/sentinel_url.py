"""Parse ``redis+sentinel://`` and ``rediss+sentinel://`` URLs (SPEC section 10).

No Redis client is imported here, so the CLI can check a URL without loading one.

Form::

    redis+sentinel://[user:password@]host:port[,host:port...]/<master-name>[/<db>][?options]

- ``user:password`` are the credentials of the data nodes (the primary and its replicas);
- each ``host:port`` is a Sentinel (port 26379 when left out; IPv6 in brackets);
- ``<master-name>`` is the name the Sentinels monitor; ``<db>`` the database number (0);
- options: ``sentinel_username`` and ``sentinel_password`` (the Sentinels' own login, when
  they require one), and for ``rediss+sentinel://`` the TLS options ``ssl_ca_certs``,
  ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname`` (used for the
  Sentinels and the data nodes alike).

Errors are :class:`~workqueue.errors.ConfigurationError` whose message never contains the
password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from workqueue.errors import ConfigurationError

__all__ = ["DEFAULT_SENTINEL_PORT", "SentinelURL", "parse_sentinel_url"]

DEFAULT_SENTINEL_PORT = 26379
_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
_TLS_OPTIONS = frozenset(
    {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname"}
)
_SENTINEL_AUTH = frozenset({"sentinel_username", "sentinel_password"})
_FORM = "redis+sentinel://[user:password@]host:port[,host:port...]/<master-name>[/<db>]"


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """A parsed Sentinel URL."""

    tls: bool
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    #: TLS options from the query (``rediss+sentinel://`` only), as given
    tls_options: dict[str, str] = field(default_factory=dict)


def _bad(problem: str) -> ConfigurationError:
    return ConfigurationError(f"Sentinel URL: {problem} (the form is {_FORM})")


def _host_port(item: str) -> tuple[str, int]:
    if not item:
        raise _bad("an empty Sentinel address (two commas, or a comma at an end)")
    if item.startswith("["):  # [IPv6]:port
        host, bracket, rest = item[1:].partition("]")
        if not bracket or not host:
            raise _bad(f"malformed IPv6 address {item!r}")
        if rest and not rest.startswith(":"):
            raise _bad(f"malformed address {item!r}")
        port_text = rest[1:] if rest else ""
    else:
        if item.count(":") > 1:
            raise _bad(f"malformed address {item!r} (put an IPv6 address in brackets)")
        host, _, port_text = item.partition(":")
        if not host:
            raise _bad(f"no host in Sentinel address {item!r}")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad(f"bad port {port_text!r} in Sentinel address {item!r} (1-65535)")
    return host, int(port_text)


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse and check ``url``; :class:`ConfigurationError` (without the password) if bad."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise _bad("the scheme must be redis+sentinel:// or rediss+sentinel://")
    tls = _SCHEMES[scheme.lower()]
    rest, _, _fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon and secret else None
    if not hosts:
        raise _bad("no Sentinel address")
    sentinels = tuple(_host_port(item.strip()) for item in hosts.split(","))
    parts = path.split("/") if slash else []
    if parts and parts[-1] == "":
        parts = parts[:-1]  # a trailing slash
    if not parts or not parts[0]:
        raise _bad("no master name (the name the Sentinels monitor, after the first '/')")
    if len(parts) > 2:
        raise _bad("too many path parts: only /<master-name>[/<db>]")
    master = unquote(parts[0])
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise _bad(f"the database {parts[1]!r} is not a number")
        db = int(parts[1])
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in _TLS_OPTIONS:
            if not tls:
                raise _bad(f"the option {name!r} needs rediss+sentinel:// (TLS)")
        elif name not in _SENTINEL_AUTH:
            known = ", ".join(sorted(_SENTINEL_AUTH | _TLS_OPTIONS))
            raise _bad(f"unknown option {name!r} (known: {known})")
        options[name] = value
    return SentinelURL(
        tls=tls,
        sentinels=sentinels,
        master=master,
        db=db,
        username=username,
        password=password,
        sentinel_username=options.pop("sentinel_username", None) or None,
        sentinel_password=options.pop("sentinel_password", None) or None,
        tls_options=options,
    )
