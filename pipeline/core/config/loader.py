"""Loading: the one reader of YAML files; validation into :class:`VigilConfig` and the errors' rendering.

A config file is validated into :class:`VigilConfig`, a pydantic tree with ``extra="forbid"`` at
every level, so a typo is an error rather than a silently ignored key. Each process gets its own
typed sub-config (``cfg.ingest``, ``cfg.inference``, ...). ``${VAR}`` and ``${VAR:-default}`` in any
string are replaced from the environment (:mod:`pipeline.core.config.env`) before validation; ``$${``
escapes a literal ``${``.

:func:`load_config` raises :class:`~pipeline.core.errors.ConfigError` listing *every* problem as
``path: message (line N)``, e.g. ``streams[2].fps: must be > 0 (line 14)``. Values are never echoed
in messages because they may be secrets.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.core.config.env import substitute_env
from pipeline.core.config.paths import anchor_paths
from pipeline.core.config.schema import VigilConfig
from pipeline.core.config.sinks import SINK_TYPES
from pipeline.core.errors import ConfigError

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """``("streams", 2, "fps")`` -> ``streams[2].fps``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _node_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    """Record the 1-based line of every mapping key / sequence item, to point errors at the file."""
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*loc, str(key_node.value))
            _node_lines(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, (*loc, i), lines)


def _substitute_tree(data: Any, loc: Loc, environ: Mapping[str, str], problems: list[tuple[Loc, str]]) -> Any:
    if isinstance(data, str):
        value, missing = substitute_env(data, environ)
        for name in missing:
            problems.append((loc, f"environment variable ${{{name}}} is not set (export it, or write "
                                  f"${{{name}:-default}})"))
        return value
    if isinstance(data, dict):
        return {k: _substitute_tree(v, (*loc, str(k)), environ, problems) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute_tree(v, (*loc, i), environ, problems) for i, v in enumerate(data)]
    return data


def _allowed_keys(loc: Loc) -> list[str]:
    """Field names allowed at ``loc``'s parent, for 'did you mean' hints."""
    model: Any = VigilConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return []
        ann = fields[part].annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if hasattr(a, "model_fields")), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


_MESSAGES: dict[str, str] = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "missing": "is required",
    "too_short": "must have at least {min_length} item(s)",
    "string_too_short": "must not be empty",
    "string_pattern_mismatch": "must match {pattern}",
}


def _message(err: Mapping[str, Any], loc: Loc) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        return f"unknown key{hint} (allowed: {', '.join(allowed)})" if allowed else f"unknown key{hint}"
    if kind in _MESSAGES:
        return _MESSAGES[kind].format(**{k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()})
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind == "union_tag_invalid":
        return f"unknown sink type; must be one of {ctx.get('expected_tags', '')}"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _clean_loc(loc: tuple[Any, ...]) -> Loc:
    """Drop the discriminator tag pydantic inserts into sink locations (``sinks.0.jsonl.path``), whatever
    the sink's type (:data:`~pipeline.core.config.sinks.SINK_TYPES`), so the error names its line."""
    return tuple(
        p for i, p in enumerate(loc)
        if not (i >= 2 and loc[i - 2] == "sinks" and isinstance(loc[i - 1], int) and p in SINK_TYPES)
    )


def validate_config(data: Any, source: str = "<config>", lines: Mapping[Loc, int] | None = None,
                    environ: Mapping[str, str] | None = None) -> VigilConfig:
    """Substitute env vars in ``data`` and validate it; raise :class:`ConfigError` with every problem."""
    env = os.environ if environ is None else environ
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping (streams:, redis:, ...)",
                          ["(top level): must be a mapping"])
    problems: list[tuple[Loc, str]] = []
    data = _substitute_tree(data, (), env, problems)
    try:
        cfg = VigilConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend((_clean_loc(tuple(e["loc"])), _message(e, _clean_loc(tuple(e["loc"]))))
                        for e in exc.errors(include_input=False))
        cfg = None
    if problems or cfg is None:
        rendered = []
        for loc, msg in problems:
            line = (lines or {}).get(loc) or (lines or {}).get(loc[:-1]) if loc else None
            rendered.append(f"{format_loc(loc)}: {msg}" + (f" (line {line})" if line else ""))
        raise ConfigError(f"{source}: {len(rendered)} problem(s)\n  " + "\n  ".join(rendered), rendered)
    return cfg


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> VigilConfig:
    """Read, substitute and validate a YAML config file; relative paths in it are relative to its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}",
                          [f"(yaml){where}: {problem}"]) from exc
    lines: dict[Loc, int] = {}
    if node is not None:
        _node_lines(node, (), lines)
    return anchor_paths(validate_config(data, str(p), lines, environ), p.parent.resolve())
