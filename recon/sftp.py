"""SFTP connections that verify the server's host key, with failures sorted for retry decisions.

Airflow retries ordinary exceptions. A wrong host key or refused credentials will not fix
themselves, so they raise `PermanentFetchError` subclasses that the DAG fails at once;
network trouble raises `TransientFetchError`, which is worth a retry.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paramiko

from recon.errors import (
    AuthError,
    ConfigError,
    FetchError,
    HostKeyError,
    PermanentFetchError,
    TransientFetchError,
)

__all__ = [
    "AuthError",
    "FetchError",
    "HostKeyError",
    "PermanentFetchError",
    "SftpEndpoint",
    "TransientFetchError",
    "connect",
]

DEFAULT_PORT = 22
_URL_OPTIONS = ("key_file", "known_hosts", "host_key")


# What paramiko and sockets raise when a connection fails or drops (OSError covers timeouts).
NETWORK_ERRORS = (paramiko.SSHException, EOFError, OSError)


@dataclass(frozen=True)
class SftpEndpoint:
    host: str
    port: int = DEFAULT_PORT
    username: str = ""
    # Secrets stay out of repr() so that logging an endpoint never leaks them.
    password: str | None = field(default=None, repr=False)
    key_file: Path | None = None
    private_key: str | None = field(default=None, repr=False)  # PEM / OpenSSH key text
    known_hosts: Path | None = None
    host_key: str | None = None  # "ssh-ed25519 AAAA..." (comment allowed)

    @classmethod
    def from_url(cls, url: str) -> SftpEndpoint:
        """`sftp://user[:password]@host[:port]/?key_file=..&known_hosts=..&host_key=..`.

        Values are percent-decoded; '+' is kept as is (base64 uses it), so write the
        space in host_key as %20.
        """
        parts = urlsplit(url)
        if parts.scheme != "sftp":
            raise ConfigError(f"SFTP URL: expected scheme 'sftp', got {parts.scheme!r}")
        if not parts.hostname:
            raise ConfigError("SFTP URL: host is missing")
        if not parts.username:
            raise ConfigError("SFTP URL: user name is missing")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ConfigError("SFTP URL: bad port") from None
        if parts.path not in ("", "/") or parts.fragment:
            raise ConfigError("SFTP URL: no path or fragment expected (remote_dir is in the rules)")
        options: dict[str, str] = {}
        for item in filter(None, parts.query.split("&")):
            key, sep, value = item.partition("=")
            if key not in _URL_OPTIONS or not sep or not value:
                raise ConfigError(
                    f"SFTP URL: bad option {key!r} (expected {', '.join(_URL_OPTIONS)}=<value>)"
                )
            options[key] = unquote(value)
        host_key = options.get("host_key")
        if host_key is not None:
            try:
                parse_host_key(host_key)
            except HostKeyError as exc:
                raise ConfigError(f"SFTP URL: host_key: {exc}") from None
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username),
            password=unquote(parts.password) if parts.password is not None else None,
            key_file=Path(options["key_file"]) if "key_file" in options else None,
            known_hosts=Path(options["known_hosts"]) if "known_hosts" in options else None,
            host_key=host_key,
        )

    @property
    def host_key_name(self) -> str:
        """The name known_hosts uses for this server."""
        return self.host if self.port == DEFAULT_PORT else f"[{self.host}]:{self.port}"


class _Reject(paramiko.RejectPolicy):  # type: ignore[misc]  # paramiko has no stubs
    """RejectPolicy that says so with our exception class."""

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        raise HostKeyError(
            f"{hostname}: no expected host key for this server "
            f"(it offered {key.get_name()} {key.get_base64()})"
        )


def parse_host_key(line: str) -> Any:
    """A paramiko PKey from "ssh-ed25519 AAAA... [comment]"."""
    fields = line.split()
    if len(fields) < 2:
        raise HostKeyError(f"expected '<type> <base64>', got {line!r}")
    try:
        return paramiko.PKey.from_type_string(fields[0], base64.b64decode(fields[1], validate=True))
    except (binascii.Error, paramiko.SSHException, ValueError) as exc:
        raise HostKeyError(f"cannot read host key {fields[0]} {fields[1][:16]}...: {exc}") from None


def _expected_host_keys(client: Any, endpoint: SftpEndpoint) -> None:
    if endpoint.known_hosts is None and endpoint.host_key is None:
        raise HostKeyError(
            f"{endpoint.host_key_name}: refusing to connect without an expected host key "
            "(give known_hosts or host_key)"
        )
    if endpoint.known_hosts is not None:
        try:
            # The "system" set is never written back, unlike load_host_keys().
            client.load_system_host_keys(str(endpoint.known_hosts))
        except OSError as exc:
            raise HostKeyError(f"cannot read known_hosts {endpoint.known_hosts}: {exc}") from None
    if endpoint.host_key is not None:
        key = parse_host_key(endpoint.host_key)
        client.get_host_keys().add(endpoint.host_key_name, key.get_name(), key)


_KEY_CLASSES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


def load_client_key(endpoint: SftpEndpoint) -> Any:
    """The client's private key, or None when it logs in with a password only."""
    if endpoint.private_key is not None:
        text, origin = endpoint.private_key, "private_key"
    elif endpoint.key_file is not None:
        origin = str(endpoint.key_file)
        try:
            text = endpoint.key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthError(f"cannot read client key {origin}: {exc}") from None
    else:
        return None
    errors = []
    for key_class in _KEY_CLASSES:
        try:
            return key_class.from_private_key(io.StringIO(text), password=endpoint.password)
        except paramiko.PasswordRequiredException:
            raise AuthError(f"client key {origin} is encrypted and no password is given") from None
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(f"{key_class.__name__}: {exc}")
    raise AuthError(f"cannot load client key {origin} ({'; '.join(errors)})")


@contextmanager
def connect(endpoint: SftpEndpoint, timeout: float = 30.0) -> Iterator[Any]:
    """An open `paramiko.SFTPClient` to the endpoint, closed (with its transport) on exit."""
    pkey = load_client_key(endpoint)
    if pkey is None and endpoint.password is None:
        raise AuthError(f"{endpoint.host_key_name}: no client key and no password")
    client = paramiko.SSHClient()
    try:
        _expected_host_keys(client, endpoint)
        client.set_missing_host_key_policy(_Reject())
        try:
            client.connect(
                endpoint.host,
                port=endpoint.port,
                username=endpoint.username or None,
                password=endpoint.password,
                pkey=pkey,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                # Only the credentials we were given: no agent, no ~/.ssh keys.
                allow_agent=False,
                look_for_keys=False,
            )
            sftp = client.open_sftp()
        except NETWORK_ERRORS as exc:
            raise classify(exc, f"connecting to {endpoint.host_key_name}") from exc
        # Without a timeout, a stalled (not closed) connection would block a read forever.
        sftp.get_channel().settimeout(timeout)
        yield sftp
    finally:
        client.close()


def classify(exc: Exception, doing: str) -> FetchError:
    """Our exception for one of NETWORK_ERRORS."""
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(f"{doing}: host key mismatch: {exc}")
    if isinstance(exc, paramiko.AuthenticationException):
        return AuthError(f"{doing}: authentication failed: {exc}")
    if isinstance(exc, paramiko.IncompatiblePeer):
        return PermanentFetchError(f"{doing}: no common algorithms with the server: {exc}")
    return TransientFetchError(f"{doing}: {type(exc).__name__}: {exc}")
