"""Reading config.yaml into a GatewayConfig, with every problem reported at once.

The file is read in four steps:

1. YAML is composed into nodes (not loaded straight into Python objects), so that every key path
   keeps the line it was written on and duplicate keys can be reported.
2. Secrets are checked: ``voicelive.api_key``, ``gateway.signing_key`` and the secrets of every
   carrier's section (its ``secret_keys``) may only name an environment variable (``${VAR}`` or
   ``${VAR:-}``), never hold a literal value.
3. ``${VAR}``, ``${VAR:-default}`` and ``$$`` are expanded in every string value.
4. The result is validated by the pydantic models of ``gateway.config.schema``. Every problem found,
   whatever step found it, is reported at once as one line
   ``<file>:<line>: <key.path>: <what was expected> (got ...)``.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeGuard, Union, get_args, get_origin

import yaml
from pydantic import Tag, ValidationError

from gateway.carriers.settings import carrier_secret_paths
from gateway.config.schema import TURN_DETECTION_TYPES, VOICE_TYPES, GatewayConfig
from gateway.settings_model import SettingsModel

SECRET_PATHS: tuple[tuple[str, str], ...] = (
    ("voicelive", "api_key"),
    *carrier_secret_paths(),
    ("gateway", "signing_key"),
    ("records", "signing_secret"),
    ("gateway", "api_token"),
    ("gateway", "console_token"),
)

_SECRET_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-)?\}")


def _literal_secret(raw: object) -> bool:
    """A secret written into the file (not unset, empty, or only an environment reference)."""
    return not (raw is None or raw == "" or (isinstance(raw, str) and _SECRET_REF.fullmatch(raw)))
_ENV_REF = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<default>:-[^}]*)?\}|(?P<bad>\{))"
)


class ConfigError(Exception):
    """config.yaml is unusable. ``str(err)`` is one line per problem; ``problems`` holds the lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------------------------
# YAML with line numbers

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"

KeyPath = tuple[str | int, ...]


class _Problem:
    __slots__ = ("line", "message", "path")

    def __init__(self, line: int | None, path: KeyPath, message: str) -> None:
        self.line, self.path, self.message = line, path, message


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _YamlReader:
    """Turns composed YAML nodes into plain Python data and records the line of every key path."""

    def __init__(self) -> None:
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[_Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._active: set[int] = set()

    def problem(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        self.problems.append(_Problem(node.start_mark.line + 1, path, message))

    def convert(self, node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> Any:
        if id(node) in self._active:
            self.problem(node, path, "an alias refers to itself")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path, lines)
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _SEQ_TAG:
                    self.problem(node, path, f"unsupported YAML tag {node.tag}")
                    return None
                items = []
                for index, item in enumerate(node.value):
                    lines[(*path, index)] = item.start_mark.line + 1
                    items.append(self.convert(item, (*path, index), lines))
                return items
            if node.tag == _TIMESTAMP_TAG:  # no setting is a date: keep "2026-07-15" as text
                return node.value
            try:
                return self._constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                self.problem(node, path, f"unsupported YAML value: {getattr(exc, 'problem', None) or exc}")
                return None
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: KeyPath, lines: dict[KeyPath, int]) -> Any:
        if node.tag != _MAP_TAG:
            self.problem(node, path, f"unsupported YAML tag {node.tag}")
            return None
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "expected a plain key, not a mapping or a list")
                continue
            key = key_node.value  # keys stay text: "+15555550100" must not become a number
            line = key_node.start_mark.line + 1
            if key in first_line:
                self.problem(
                    key_node, (*path, key), f"duplicate key (first written on line {first_line[key]})"
                )
                continue
            first_line[key] = line
            lines[(*path, key)] = line
            result[key] = self.convert(value_node, (*path, key), lines)
        # `<<: *anchor` merges: keys written in this mapping win, then merged mappings in order.
        for merge in merges:
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    self.problem(source, path, "expected a mapping to merge with <<")
                    continue
                merged_lines: dict[KeyPath, int] = {}
                merged = self.convert(source, path, merged_lines)
                if not isinstance(merged, dict):
                    continue
                for key, value in merged.items():
                    if key in result:
                        continue
                    result[key] = value
                    prefix = (*path, key)
                    for sub, line in merged_lines.items():
                        if sub[: len(prefix)] == prefix:
                            lines[sub] = line
        return result


# --------------------------------------------------------------------------------------------
# Environment references


def _expand(text: str, env: Mapping[str, str]) -> tuple[str, list[str], list[str]]:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``$$``; returns (value, problems, names used).

    ``${VAR}`` needs VAR set to a non-empty value: an empty variable is almost always a deployment
    mistake, and ``${VAR:-}`` says "optional" explicitly. ``${VAR:-default}`` uses the default when
    VAR is unset or empty. A ``$`` not followed by ``$`` or ``{`` is kept as written.
    """
    out: list[str] = []
    problems: list[str] = []
    names: list[str] = []
    pos = 0
    for match in _ENV_REF.finditer(text):
        out.append(text[pos : match.start()])
        pos = match.end()
        if match.group("dollar"):
            out.append("$")
        elif match.group("bad"):
            problems.append("malformed environment reference: write ${NAME} or ${NAME:-default}")
            pos = len(text)
            break
        else:
            name = match.group("name")
            names.append(name)
            value = env.get(name)
            default = match.group("default")
            if default is not None:
                out.append(value if value else default[2:])
            elif value is None:
                problems.append(f"environment variable {name} is not set")
            elif value == "":
                problems.append(f"environment variable {name} is not set (it is empty)")
            else:
                out.append(value)
    out.append(text[pos:])
    return "".join(out), problems, names


class _Expander:
    def __init__(self, env: Mapping[str, str], lines: dict[KeyPath, int]) -> None:
        self.env = env
        self.lines = lines
        self.problems: list[_Problem] = []
        self.failed: set[KeyPath] = set()
        self.refs: dict[str, tuple[str, ...]] = {}

    def line(self, path: KeyPath) -> int | None:
        return _line_of(self.lines, path)

    def walk(self, value: Any, path: KeyPath) -> Any:
        if isinstance(value, dict):
            return {k: self.walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "$" in value:
            expanded, problems, names = _expand(value, self.env)
            if names:
                self.refs[_dotted(path)] = tuple(names)
            for message in problems:
                self.problems.append(_Problem(self.line(path), path, message))
            if problems:
                self.failed.add(path)
            return expanded
        return value


def _line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


# --------------------------------------------------------------------------------------------
# pydantic errors -> ops language

_MISSING = object()


def _locate(tree: Any, loc: tuple[Any, ...], missing: bool) -> tuple[KeyPath, Any]:
    """Map a pydantic error location onto the key path of the data. Union branch names in the
    location (such as ``azure-standard``) are not keys of the data and are skipped."""
    node, path = tree, []
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(part)
        elif missing and (index == len(loc) - 1 or part not in _BRANCH_TAGS):
            path.append(part)
            node = _MISSING
    return tuple(path), node


_BRANCH_TAGS = frozenset({"voice-name", *VOICE_TYPES, *TURN_DETECTION_TYPES, "transcription", "transcription-off"})


def _leaves(annotation: Any, tag: str | None = None) -> Iterator[tuple[Any, str | None]]:
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *meta = get_args(annotation)
        for item in meta:
            if isinstance(item, Tag):
                tag = item.tag
        yield from _leaves(base, tag)
    elif origin is Union or origin is types.UnionType:
        for arg in get_args(annotation):
            yield from _leaves(arg)
    else:
        yield annotation, tag


def _is_model(annotation: Any) -> TypeGuard[type[SettingsModel]]:
    return isinstance(annotation, type) and issubclass(annotation, SettingsModel)


def _model_at(loc: tuple[Any, ...]) -> type[SettingsModel] | None:
    """The model class that validated the mapping at ``loc`` (for listing its allowed keys)."""
    current: Any = GatewayConfig
    for part in loc:
        leaves = list(_leaves(current))
        step = next((leaf for leaf, tag in leaves if tag is not None and tag == part), None)
        if step is None:
            for leaf, _ in leaves:
                if _is_model(leaf) and part in leaf.model_fields:
                    step = leaf.model_fields[part].annotation
                    break
                if get_origin(leaf) is dict:
                    step = get_args(leaf)[1]
                    break
                if get_origin(leaf) is list and isinstance(part, int):
                    step = get_args(leaf)[0]
                    break
        if step is not None:
            current = step
    models = [leaf for leaf, _ in _leaves(current) if _is_model(leaf)]
    return models[0] if len(models) == 1 else None


def _quoted_values(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _message(err: Any) -> tuple[str, bool]:
    """(ops message, whether to show the offending value) for one pydantic error."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "gateway":
        return ctx["m"], bool(ctx.get("show_got", True))
    if kind == "missing":
        return "required key missing", False
    if kind == "extra_forbidden":
        model = _model_at(tuple(err["loc"][:-1]))
        if model is None:
            return "unknown key", False
        allowed = sorted(
            (name for name in model.model_fields if name not in model._hidden),
            key=lambda name: name != "type",
        )
        return f"unknown key (expected one of: {', '.join(allowed)})", False
    if kind in ("literal_error", "enum"):
        return f"expected one of {', '.join(_quoted_values(str(ctx.get('expected', ''))))}", True
    if kind == "union_tag_invalid":
        return f"expected one of {', '.join(_quoted_values(str(ctx.get('expected_tags', ''))))}", True
    if kind == "union_tag_not_found":
        return "required key missing", False
    if kind in ("string_type", "string_unicode"):
        return "expected text", True
    if kind == "string_too_short":
        return "expected text, not an empty value", True
    if kind in ("bool_type", "bool_parsing"):
        return "expected true or false", True
    if kind in ("int_type", "int_parsing", "int_from_float", "int_parsing_size"):
        return "expected a whole number", True
    if kind in ("float_type", "float_parsing", "finite_number"):
        return "expected a number", True
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return "expected a mapping (key: value lines)", True
    if kind in ("list_type", "tuple_type", "set_type", "iterable_type"):
        return "expected a list", True
    bounds = {
        "greater_than": "greater than {gt}",
        "greater_than_equal": "of at least {ge}",
        "less_than": "less than {lt}",
        "less_than_equal": "of at most {le}",
    }
    if kind in bounds:
        return "expected a number " + bounds[kind].format(**ctx), True
    if kind in ("too_short", "too_long"):
        return "expected a list of a different length", True
    message = str(err.get("msg", kind))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    return message, True


def _translate(
    exc: ValidationError, tree: Any, lines: dict[KeyPath, int], skip: set[KeyPath]
) -> list[_Problem]:
    problems: list[_Problem] = []
    for err in exc.errors():
        kind, ctx = err["type"], err.get("ctx") or {}
        # A rule may name a key that is not written (e.g. "model" in a profile that has neither
        # model nor agent): like a missing key, it is reported at its own path.
        path, value = _locate(tree, tuple(err["loc"]), missing=kind in ("missing", "gateway"))
        sub = ctx.get("sub")
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            sub = "type"
        if sub is not None:
            path = (*path, sub)
            value = value.get(sub, _MISSING) if isinstance(value, dict) else _MISSING
        if any(path[: len(bad)] == bad for bad in skip):
            continue
        message, show_got = _message(err)
        if show_got and value is not _MISSING:
            message = f"{message} (got {_show(value)})"
        problems.append(_Problem(_line_of(lines, path), path, message))
    return problems


# --------------------------------------------------------------------------------------------
# Entry points


def _format(source: str, problem: _Problem) -> str:
    where = f"{source}:{problem.line}" if problem.line is not None else source
    return (
        f"{where}: {_dotted(problem.path)}: {problem.message}"
        if problem.path
        else f"{where}: {problem.message}"
    )


def _raise(source: str, problems: list[_Problem], secrets: list[str]) -> None:
    ordered = sorted(enumerate(problems), key=lambda item: (item[1].line or 0, item[0]))
    out: list[str] = []
    for _, problem in ordered:
        line = _format(source, problem)
        head = source  # the file name is the operator's own: scrub only what follows it
        body = line[len(head):] if line.startswith(head) else line
        for secret in secrets:
            if len(secret) >= 6:  # as the log scrubber: shorter values would mangle the message
                body = body.replace(secret, "***")
        line = head + body if line.startswith(head) else body
        if line not in out:
            out.append(line)
    raise ConfigError(out)


def parse_config(
    text: str, source: str = "config.yaml", env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate the text of a config file; ``source`` names the file in error messages."""
    env = os.environ if env is None else env
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "unreadable YAML"
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError([f"{where}: YAML syntax error: {reason}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: YAML syntax error: {exc}"]) from None
    if root is None:
        raise ConfigError([f"{source}: the file is empty (expected at least a profiles section)"])

    reader = _YamlReader()
    lines: dict[KeyPath, int] = {(): root.start_mark.line + 1}
    tree = reader.convert(root, (), lines)
    problems = list(reader.problems)
    if not isinstance(tree, dict):
        problems.append(
            _Problem(root.start_mark.line + 1, (), "expected a mapping of sections (profiles, routes...)")
        )
        _raise(source, problems, [])
    assert isinstance(tree, dict)

    # Secrets: only an environment reference, never a literal written in the file.
    skip: set[KeyPath] = set()
    for section, key in SECRET_PATHS:
        part = tree.get(section)
        if not isinstance(part, dict):
            continue
        raw = part.get(key)
        if not _literal_secret(raw):
            continue
        path = (section, key)
        problems.append(
            _Problem(_line_of(lines, path), path, "secrets come from the environment only: write ${VAR_NAME}")
        )
        tree[section] = {**part, key: None}
        skip.add(path)
    voicelive = tree.get("voicelive")
    resources = voicelive.get("resources") if isinstance(voicelive, dict) else None
    for index, resource in enumerate(resources if isinstance(resources, list) else []):
        if not isinstance(resource, dict) or not _literal_secret(resource.get("api_key")):
            continue
        key_path: KeyPath = ("voicelive", "resources", index, "api_key")
        problems.append(
            _Problem(_line_of(lines, key_path), key_path, "secrets come from the environment only: write ${VAR_NAME}")
        )
        resource["api_key"] = None
        skip.add(key_path)

    expander = _Expander(env, lines)
    data = expander.walk(tree, ())
    problems += expander.problems
    skip |= expander.failed

    if "source" in data:
        allowed = [name for name in GatewayConfig.model_fields if name not in GatewayConfig._hidden]
        problems.append(
            _Problem(
                _line_of(lines, ("source",)),
                ("source",),
                f"unknown key (expected one of: {', '.join(allowed)})",
            )
        )
        data = {k: v for k, v in data.items() if k != "source"}

    secrets = [
        value
        for section, key in SECRET_PATHS
        if isinstance(data.get(section), dict) and isinstance(value := data[section].get(key), str)
    ]
    expanded = data.get("voicelive")
    listed = expanded.get("resources") if isinstance(expanded, dict) else None
    secrets += [value for item in (listed if isinstance(listed, list) else [])
                if isinstance(item, dict) and isinstance(value := item.get("api_key"), str) and value]
    config: GatewayConfig | None = None
    try:
        config = GatewayConfig.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems += _translate(exc, data, lines, skip)
    if problems or config is None:
        _raise(source, problems, secrets)
    assert config is not None
    config._env_refs = dict(expander.refs)
    config._url_secrets = [
        env[name] for path, names in expander.refs.items()
        if re.fullmatch(r"profiles\.[^.]+\.tools\[\d+\]\.http\.url", path) for name in names if env.get(name)]
    return config


def load_config(path: str | Path = "config.yaml", env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate a config file. Raises ConfigError listing every problem found."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{source}: is a directory, not a file"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot be read ({exc.strerror or exc})"]) from None
    return parse_config(text, source=source, env=env)

