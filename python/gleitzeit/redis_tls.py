"""TLS options of the services' Redis connection, read from the environment.

``GLEITZEIT_REDIS_URL=rediss://…`` connects over TLS; the server is verified against the
system trust store (which honours ``SSL_CERT_FILE``). The same variables as for the Rust
worker and CLI add to that:

- ``GLEITZEIT_REDIS_TLS_CA``: PEM file of CA certificates to trust as well (a private CA);
- ``GLEITZEIT_REDIS_TLS_CERT`` and ``GLEITZEIT_REDIS_TLS_KEY``: a client certificate and its
  key, for a Redis with ``tls-auth-clients yes``.

:func:`tls_options` checks them (only with ``rediss://``, certificate and key together, each
file PEM) and returns the keyword arguments for ``redis.asyncio.from_url``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ENV_CA = "GLEITZEIT_REDIS_TLS_CA"
ENV_CERT = "GLEITZEIT_REDIS_TLS_CERT"
ENV_KEY = "GLEITZEIT_REDIS_TLS_KEY"


class TlsConfigError(ValueError):
    """A TLS variable is unusable; the message names the variable (and file) at fault."""


def _pem(name: str, path: str, marker: str) -> None:
    """Refuse a file that cannot be read or holds no PEM block of the expected kind."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise TlsConfigError(f"{name}: cannot read {path}: {exc.strerror or exc}") from exc
    if "-----BEGIN " not in text or marker not in text:
        raise TlsConfigError(f"{name}: {path} is not a PEM file with a {marker.strip('- ')} block")


def tls_options(url: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``redis.asyncio.from_url`` keyword arguments for the TLS files named in ``environ``
    (default: the process environment). Empty when none is set.

    Raises :class:`TlsConfigError` when a file is set for a URL that is not ``rediss://``,
    when only one of certificate and key is set, or when a file is missing or not PEM.
    """
    env = os.environ if environ is None else environ
    ca, cert, key = (env.get(name) or None for name in (ENV_CA, ENV_CERT, ENV_KEY))
    set_names = [n for n, v in ((ENV_CA, ca), (ENV_CERT, cert), (ENV_KEY, key)) if v]
    if not set_names:
        return {}
    scheme = url.partition("://")[0].lower()
    if scheme not in ("rediss", "rediss+sentinel", "rediss+cluster"):
        raise TlsConfigError(
            f"{set_names[0]} is set but the Redis URL is not rediss:// (or rediss+sentinel://, rediss+cluster://) "
            "(TLS files apply only to TLS connections)"
        )
    if bool(cert) != bool(key):
        present, missing = (ENV_CERT, ENV_KEY) if cert else (ENV_KEY, ENV_CERT)
        raise TlsConfigError(
            f"{present} is set without {missing}: a client certificate needs its key"
        )
    options: dict[str, str] = {}
    if ca:
        _pem(ENV_CA, ca, "CERTIFICATE-----")
        options["ssl_ca_certs"] = ca
    if cert and key:
        _pem(ENV_CERT, cert, "CERTIFICATE-----")
        _pem(ENV_KEY, key, "PRIVATE KEY-----")
        options["ssl_certfile"] = cert
        options["ssl_keyfile"] = key
    return options
