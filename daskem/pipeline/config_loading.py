"""Reading a YAML config: --set overrides, ${ENV} expansion, validation errors as one line per key,
and the masking of its secrets.

Storage options under a secret-looking key (``data.credentials``), storage options expanded from an
environment variable (kept as ``FromEnv`` strings) and passwords in URLs are secrets: the config
keeps their real values, since they open the store, but ``mask_document`` hides them in what
daskem writes (run.json, model.json) and ``masking_secrets`` in its log lines and error messages.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from daskem.data.credentials import MASK, is_secret_key, mask_text, redacted_value, secrets_in
from daskem.errors import ConfigError, DaskemUserError
from daskem.pipeline.config import DaskemConfig

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class FromEnv(str):
    """A storage option expanded from an environment variable: used as the string it holds (its repr too,
    which fsspec hashes to cache filesystems), but masked in everything daskem writes, logs or reports."""

    __slots__ = ()

    @staticmethod
    def holds(text: str) -> bool:
        """Whether ``text`` came from the environment (the ``marked`` test of ``secrets_in``)."""
        return isinstance(text, FromEnv)


def load_config(path: str | os.PathLike, overrides: typing.Sequence[str] = ()) -> DaskemConfig:
    """Read, override, expand and validate a YAML config file."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the config file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (data, model, output, ...)")
    return parse_config(raw, source=source, overrides=overrides)



def parse_config(
    raw: dict[str, Any], *, source: str = "<config>", overrides: typing.Sequence[str] = (), model=DaskemConfig
):
    """Validate a plain mapping (after ``--set`` overrides and ``${VAR}`` expansion) into ``model``."""
    raw = {key: value for key, value in raw.items()}
    overridden = {}
    for override in overrides:
        raw = apply_override(raw, override)
        overridden[tuple(override.partition("=")[0].strip().split("."))] = f"--set {shown_override(override)}"
    raw = expand_env(raw)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, model, overridden)) from None



def apply_override(raw: dict[str, Any], override: str, flag: str = "--set") -> dict[str, Any]:
    """Return a copy of ``raw`` with ``section.key=value`` set; the value is parsed as YAML. ``flag``
    names the option it came from in error messages."""
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        example = "key=value, e.g. anon=true" if flag != "--set" else "section.key=value, e.g. model.n_components=12"
        raise ConfigError(f"{flag} {shown_override(override, flag)}: write it as {example}")
    try:  # a credential stays the text it is (a password 0123 is not the number 83)
        credential = credential_option(parts, options=flag != "--set")
        value = text if credential else yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    out = dict(raw)
    node = out
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"{flag} {shown_override(override, flag)}: {where} is a value, not a section")
        node[part] = dict(child)
        node = node[part]
    node[parts[-1]] = value
    return out



def credential_option(parts: list[str], *, options: bool = False) -> bool:
    """Whether the key at the dotted ``parts`` is a storage option named like a credential, whose value
    stays the text it is; ``options``: the parts are already inside a storage-options mapping."""
    inside = options or any(part.endswith("storage_options") for part in parts[:-1])
    return inside and is_secret_key(parts[-1])


def shown_override(override: str, flag: str = "--set") -> str:
    """An override as an error message quotes it, its value hidden, since it may be a credential: the
    key and ``=***``; without an '=' to tell the key from the value, only the text before a ':' or a
    space (nothing at all from a storage-option flag)."""
    key, sep, _ = override.partition("=")
    if sep:  # what is wrong is the key: the value is never needed to fix it
        return repr(f"{key}={MASK}")
    if flag != "--set":
        return repr(MASK)
    head = re.split(r"[:\s]", override, maxsplit=1)[0]
    return repr(head + ("..." if head != override else ""))


def expand_env(value: Any, where: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string value, recursively; a storage option
    that took anything from the environment becomes a ``FromEnv`` string, masked in outputs and logs."""
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    from_env = []

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            from_env.append(name)
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{where}: environment variable {name} is not set; export it or write ${{{name}:-default}}"
        )

    expanded = _ENV.sub(substitute, value)
    option = "storage_options." in f"{where}."
    credential = credential_option(where.split("."))
    if not credential and expanded != value and _ENV.fullmatch(value):
        # a whole value from the environment is parsed like YAML, so ${N} can be a number and
        # anon: ${ANON} a boolean; not a credential's, which stays the string it is (a password 0123
        # is not the number 83)
        try:
            parsed = yaml.safe_load(expanded)
        except yaml.YAMLError:
            parsed = expanded
        if isinstance(parsed, (int, float, bool)):
            return parsed
    return FromEnv(expanded) if from_env and option else expanded



def _shown_input(loc: list[str], given: Any) -> str:
    """How an error message shows a value it rejects: only its type under ``storage_options`` or a
    secret-looking key (a list given for the options holds their credentials), *** for a value from
    ${VAR}, otherwise its repr with URL passwords masked."""
    if isinstance(given, FromEnv):
        return MASK
    if any(is_secret_key(part) or str(part).endswith("storage_options") for part in loc):
        return f"a {type(given).__name__}"
    if isinstance(given, (dict, list, tuple)):  # a section given as a list, say: its options' credentials masked
        secrets = secrets_in(given, marked=FromEnv.holds)
        return mask_text(repr(redacted_value(given)), frozenset(secrets))
    return mask_text(repr(given))


def format_validation_error(exc: ValidationError, source: str, model=DaskemConfig,
                            overridden: typing.Mapping[tuple[str, ...], str] | None = None) -> str:
    """One line per problem (joined by '; '), naming the dotted key and the fix, and where it was
    written: the ``source`` file, or the ``--set`` flag of ``overridden`` (its dotted key -> how the
    flag is shown) that set the key or a section above it.

    A value that matches none of a union's forms (an int or a list of ints, say) gives one line
    listing the forms, not one line per form.
    """
    problems: dict[str, tuple[list[str], str]] = {}  # key -> (what was wrong, what was given)
    written: dict[str, str] = {}  # key -> where its value was written
    for error in exc.errors():
        loc = _config_key(model, error["loc"])
        key = ".".join(loc)
        written_by = _written_by(loc, overridden or {})
        kind = error["type"]
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        got = "" if kind.startswith("value_error") else f" (got {_shown_input(loc, given)})"
        if kind == "extra_forbidden":
            valid = _field_names(model, loc[:-1])
            close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
            prefix = ".".join(loc[:-1] + [""])
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
            key = f"unknown key '{key}'"
            problems[key] = ([hint], "")
        elif kind == "missing":
            problems[key] = (["required key is missing; add it"], "")
        else:
            messages, _ = problems.setdefault(key, ([], got))
            messages.append(message)
        written.setdefault(key, written_by or source)
    lines: dict[str, list[str]] = {}  # where -> its problems, in the order found
    for key, (messages, got) in problems.items():
        if len(messages) > 1:
            text = "should be " + " or ".join(m.removeprefix("Input should be ") for m in messages)
        else:
            text = messages[0]
        separator = "; " if key.startswith("unknown key") else ": "
        lines.setdefault(written[key], []).append(f"{key}{separator}{text}{got}" if key else f"{text}{got}")
    return "; ".join(f"{where}: " + "; ".join(found) for where, found in lines.items())


def _written_by(loc: list[str], overridden: typing.Mapping[tuple[str, ...], str]) -> str | None:
    """The ``--set`` flag (as shown) that set the key at ``loc``, a section above it or a key inside
    it (an unknown section is reported at its own name), the last one given; None for the file's own."""
    found = None
    for parts, shown in overridden.items():
        common = min(len(parts), len(loc))
        if common and tuple(loc[:common]) == tuple(parts[:common]):
            found = shown
    return found



def _config_key(model: type[BaseModel], loc: tuple) -> list[str]:
    """The config key of an error's location: the field names along it, and list positions.

    pydantic also names the member of a union that failed (``int``, ``list[int]``,
    ``literal['full','tied']``): past a field that is not a section, only list positions are kept.
    """
    parts: list[str] = []
    section: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            parts.append(str(part))
        elif section is not None:
            parts.append(part)  # a field, or an unknown key of the section
            field = section.model_fields.get(part)
            section = _model_of(field.annotation) if field is not None else None
    return parts



def _field_names(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Valid keys of the section at ``loc`` (a path through nested config models)."""
    for part in loc:
        field = model.model_fields.get(part)
        sub = _model_of(field.annotation) if field is not None else None
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)



def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None



# ----------------------------------------------------------------------------- secrets


def secret_values(config) -> frozenset[str]:
    """The strings of ``config`` (a config naming its stores in ``stores()``) never to be written or logged: storage
    options under secret-looking keys or from the environment, and passwords in URLs."""
    found: set[str] = set()
    for path, storage_options in config.stores().values():
        found |= secrets_in(dict(storage_options), marked=FromEnv.holds) | secrets_in(path)
    return frozenset(found)


def mask_document(value: Any, secrets: frozenset[str], *, options: bool = False) -> Any:
    """A copy of a JSON-ready document with its secrets masked: values that are secrets or hold one, and,
    inside a ``storage_options`` mapping, every value under a secret-looking key."""
    if isinstance(value, dict):
        return {key: MASK if options and is_secret_key(key) and item is not None
                else mask_document(item, secrets, options=options or str(key).endswith("storage_options"))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_document(item, secrets, options=options) for item in value]
    if isinstance(value, str):
        return MASK if value in secrets else mask_text(value, secrets)
    return value


class _MaskSecrets(logging.Filter):
    """Rewrites a log record whose message holds a secret."""

    def __init__(self, secrets: frozenset[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message, self.secrets)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def masking_secrets(command):
    """Decorate a command whose first argument is its config: while it runs, log lines show none of the
    config's secrets, and neither does the message of a ``DaskemUserError`` it raises."""

    @functools.wraps(command)
    def wrapper(config, *args, **kwargs):
        secrets = secret_values(config)
        mask = _MaskSecrets(secrets)
        handlers = {handler for name in (None, "daskem", "distributed") for handler in logging.getLogger(name).handlers}
        for handler in handlers:
            handler.addFilter(mask)
        try:
            return command(config, *args, **kwargs)
        except DaskemUserError as exc:
            masked = mask_text(str(exc), secrets)
            if masked == str(exc):
                raise
            raise type(exc)(masked) from None
        finally:
            for handler in handlers:
                handler.removeFilter(mask)

    return wrapper
