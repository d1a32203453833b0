"""Which storage options are credentials, and how they are kept out of messages and records.

One rule for every place that shows a store's options: the run record, the model's metadata, error
messages from a store or an output location, and (through ``pipeline.config_loading``) log lines.
"""

from __future__ import annotations

from typing import Any, Mapping

MASK = "***"
# A storage option is a secret when its key holds one of these words (case-insensitive), e.g.
# aws_secret_access_key, key, session_token, account_key, client_secret, sas_token, connection_string;
# endpoint_url, region_name, anon or client_kwargs are not (though a password in a URL is, and
# ``pipeline.config_loading`` treats any value from ${VAR} as one too).
SECRET_WORDS = ("secret", "password", "passwd", "token", "key", "credential", "auth", "connection_string", "sas")


def is_secret_key(key: Any) -> bool:
    """Whether a storage option's key names a secret (see ``SECRET_WORDS``)."""
    lowered = str(key).lower()
    return any(word in lowered for word in SECRET_WORDS)


def redacted(storage_options: Mapping[str, Any]) -> dict[str, Any]:
    """``storage_options`` with the value of every credential hidden, nested mappings too."""
    return {name: MASK if is_secret_key(name) else redacted(value) if isinstance(value, Mapping) else value
            for name, value in storage_options.items()}


def scrub(exc: BaseException, options: Mapping[str, Any]) -> str:
    """``exc`` as one line of text, every credential of ``options`` replaced by ``***``."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    secrets: list[str] = []

    def collect(mapping: Mapping[str, Any]) -> None:
        for name, value in mapping.items():
            if isinstance(value, Mapping):
                collect(value)
            elif is_secret_key(name) and isinstance(value, str) and value:
                secrets.append(value)

    collect(options)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
