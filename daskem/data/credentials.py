"""Which storage options are credentials, and how they are kept out of messages and records.

One rule for every place that shows a store's options or a URL: the run record, the model's
metadata, the checkpoint, error messages from a store or an output location, what the command line
prints, and (through ``pipeline.config_loading``) log lines.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

MASK = "***"
# A storage option (or a URL's query parameter) is a secret when its name, lower-cased and without
# '-', '_' or spaces, holds one of these words: aws_secret_access_key, key, session_token,
# account_key, client_secret, sas_token, connection_string, ConnectionString, passphrase, pwd,
# private_key, Cookie, Authorization, X-Amz-Signature... endpoint_url, region_name, anon or
# client_kwargs are not (though a password in a URL is, and ``pipeline.config_loading`` treats any
# value from ${VAR} as one too).
SECRET_WORDS = ("secret", "pass", "pwd", "token", "key", "credential", "auth", "connectionstring", "connstr",
                "sas", "signature", "private", "cookie", "bearer", "jwt", "assertion")
# Names that are secrets only whole: an Azure SAS's sig, an OAuth code (not sigma, not design).
SECRET_NAMES = frozenset({"sig", "code"})
# The password of a URL's user information: everything from the first ':' after the user name to the
# last '@' before the host (a password may hold a raw '@').
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)([^/\s]+)(@)")
# A URL with a query or a fragment, and one parameter of those: ?name=value, &name=value, #name=value.
_URL_WITH_QUERY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s?#]*[?#]\S*")
_PARAMETER = re.compile(r"([?&;#])([^=&;#\s]+)=([^&;#\s]+)")
# Secrets shorter than this are masked where they are whole values, not inside longer text.
_MIN_MASKED_SUBSTRING = 4


def is_secret_key(key: Any) -> bool:
    """Whether a storage option's (or query parameter's) name names a secret (see ``SECRET_WORDS``)."""
    normalized = re.sub(r"[-_\s]", "", str(key).lower())
    return normalized in SECRET_NAMES or any(word in normalized for word in SECRET_WORDS)


def url_secrets(text: str) -> set[str]:
    """The passwords of the URLs in ``text`` and the values of their secret-looking query parameters."""
    found = {match.group(2) for match in _URL_PASSWORD.finditer(text)}
    for url in _URL_WITH_QUERY.finditer(text):
        found |= {match.group(3) for match in _PARAMETER.finditer(url.group(0)) if is_secret_key(match.group(2))}
    return found


def without_url_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ***, and nothing else changed."""
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)


def mask_text(text: str, secrets: frozenset[str] = frozenset()) -> str:
    """``text`` with every secret (of at least 4 characters), every password in a URL and every value of
    a URL's secret-looking query parameter replaced by ***; a local path's '?' or '&' is left alone."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_MASKED_SUBSTRING:
            text = text.replace(secret, MASK)
    text = without_url_passwords(text)

    def query(url: re.Match) -> str:
        return _PARAMETER.sub(lambda m: f"{m[1]}{m[2]}={MASK}" if is_secret_key(m[2]) else m[0], url.group(0))

    return _URL_WITH_QUERY.sub(query, text)


def redacted(storage_options: Mapping[str, Any]) -> dict[str, Any]:
    """``storage_options`` with the value of every credential hidden, in nested mappings and lists too."""
    return {name: MASK if is_secret_key(name) else redacted_value(value) for name, value in storage_options.items()}


def redacted_value(value: Any) -> Any:
    """A copy of any value with the credentials of the mappings in it hidden, and URL passwords masked."""
    if isinstance(value, Mapping):
        return redacted(value)
    if isinstance(value, (list, tuple)):
        return [redacted_value(item) for item in value]
    return mask_text(value) if isinstance(value, str) else value


def secrets_in(value: Any, *, marked: Callable[[str], bool] = lambda text: False) -> set[str]:
    """The secret strings of storage options (or of a path): values under secret-looking names, in nested
    mappings and lists too, strings that ``marked`` says are secret (a value from ${VAR}), passwords of
    URLs and values of secret query parameters."""
    found: set[str] = set()

    def walk(item: Any, secret: bool) -> None:
        if isinstance(item, Mapping):
            for name, inner in item.items():
                walk(inner, secret or is_secret_key(name))
        elif isinstance(item, (list, tuple)):
            for inner in item:
                walk(inner, secret)
        elif isinstance(item, str):
            if secret or marked(item):
                found.add(str(item))
            found.update(url_secrets(item))
        elif secret and item is not None and not isinstance(item, bool):
            found.add(str(item))

    walk(value, False)
    return {text for text in found if text}


def scrub(exc: BaseException, options: Mapping[str, Any]) -> str:
    """``exc`` as one line of text, every credential of ``options`` (and URL passwords) replaced by ``***``."""
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(mask_text(text, frozenset(secrets_in(options))).split())
