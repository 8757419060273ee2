"""Seed-compatible, strict YAML configs.

Files use the seed's keys and inheritance (``_BASE``, ``_BASE_RUN``, ``_BASE_MODEL``; precedence
schema defaults < model file < run file < the file itself < its children), but paths are resolved
against the directory of the file that names them, and every key is checked against
:mod:`tada.config.schema`: an unknown key fails with the file, line and the closest valid keys, a
value of the wrong type fails naming the key and the expected type.

Typical use::

    cfg = load_config("configs/projects/tada/k400/tada2d_8x8.yaml",
                      overrides=["TRAIN.BATCH_SIZE", "32", "NUM_GPUS=0"])
    cfg.TRAIN.BATCH_SIZE  # 32 (an int: override values are parsed as YAML)
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import os
import re
import reprlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from tada.config.schema import NONE, RANGES, SCHEMA, Key
from tada.errors import TadaError
from tada.fileio import atomic_open, read_utf8_text

__all__ = [
    "Config", "ConfigError", "default_config", "load_config", "save_config", "parse_overrides", "schema_keys",
    "walk_dotted", "packaged_config_dir", "packaged_config_names", "resolve_config_path",
]

_INHERIT_KEYS = ("_BASE_MODEL", "_BASE_RUN", "_BASE")  # applied in this order: later wins


class ConfigError(TadaError, ValueError):
    """A config file or override is invalid; the message names the file/line and key."""


# --------------------------------------------------------------------------------------------
# YAML reading with line numbers and YAML-1.2-style floats ("1e-4" is a float, not a string)
# --------------------------------------------------------------------------------------------
class _LinedDict(dict):
    """A dict that remembers the line (1-based) where each key was written."""

    lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    """SafeLoader with line-numbered mappings, YAML 1.2 scalars and bounded alias expansion."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_alias_expansion(self.name, node)  # before constructing: the check sees aliases as shared nodes
        return self.construct_document(node)


_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))
# YAML 1.2 booleans: only true/false. YAML 1.1 would read `off`, `no`, `on`, `yes` as booleans,
# which turns `TRAIN.AMP off` into False.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LinedDict:
    loader.flatten_mapping(node)
    out = _LinedDict()
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise ConfigError(
                f"{loader.name}:{key_node.start_mark.line + 1}: key '{key}' is written twice"
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# Aliases (``*name``) may repeat a node; what they add to the document when expanded is bounded,
# so a few hundred bytes of nested aliases (a "billion laughs" file) cannot become gigabytes in
# the config, its error messages or the copy a checkpoint stores.
MAX_ALIAS_EXPANSION = 10_000  # nodes aliases may add beyond those written in the file


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], budget: int) -> int:
    """Nodes of ``node`` with every alias expanded (memoised per node; stops past ``budget``)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise ConfigError(f"{node.start_mark.name}:{node.start_mark.line + 1}: an alias refers to a node that "
                          "contains it (a recursive structure)")
    open_nodes.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_nodes, budget)
        if total > budget:
            break
    open_nodes.discard(id(node))
    sizes[id(node)] = total
    return total


def _check_alias_expansion(name: str, root: yaml.Node) -> None:
    sizes: dict[int, int] = {}
    written = sum(1 for _ in _distinct_nodes(root))
    expanded = _expanded_size(root, sizes, set(), budget=written + MAX_ALIAS_EXPANSION)
    if expanded > written + MAX_ALIAS_EXPANSION:
        raise ConfigError(
            f"{name}: YAML aliases expand {written} written nodes to more than {written + MAX_ALIAS_EXPANSION} "
            f"(at most {MAX_ALIAS_EXPANSION} added nodes are allowed); write the values out instead"
        )


def _distinct_nodes(root: yaml.Node) -> Iterator[yaml.Node]:
    """Each node of the composed document once, however many aliases name it."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)


def _parse_yaml_value(text: str) -> Any:
    """An override's value, read as YAML with the file rules (aliases bounded alike)."""
    loader = _Loader(text)
    loader.name = "override"
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"override: the value {short_repr(text)} is not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"override: the value {short_repr(text)} is nested too deeply") from None
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> dict:
    try:
        text = read_utf8_text(path, error=ConfigError)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as err:  # a directory, no permission, ...
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        loader = _Loader(text)
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    if data is None:
        data = _LinedDict()
        data.lines = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of KEY: value")
    return data


# --------------------------------------------------------------------------------------------
# Schema helpers
# --------------------------------------------------------------------------------------------
def walk_dotted(node: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) of a nested dict: the schema, or a config's ``to_dict()``."""
    for name, value in node.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            yield from walk_dotted(value, path + ".")
        else:
            yield path, value


def schema_keys() -> list[str]:
    """All dotted leaf keys of the schema."""
    return [path for path, _ in walk_dotted(SCHEMA)]


def _schema_node(dotted: str) -> Any:
    """The schema entry (dict for a section, leaf otherwise) at a dotted key, or raise KeyError."""
    node: Any = SCHEMA
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _closest_keys(dotted: str) -> list[str]:
    keys = schema_keys()
    sections = sorted({k.rsplit(".", 1)[0] for k in keys if "." in k})
    candidates = keys + sections
    close = difflib.get_close_matches(dotted, candidates, n=3, cutoff=0.6)
    leaf = dotted.rsplit(".", 1)[-1]
    by_leaf = [k for k in keys if difflib.SequenceMatcher(None, leaf, k.rsplit(".", 1)[-1]).ratio() > 0.8]
    for k in by_leaf:
        if k not in close:
            close.append(k)
    return close[:5]


def _unknown_key_error(where: str, dotted: str) -> ConfigError:
    close = _closest_keys(dotted)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"{where}: unknown config key '{dotted}'{hint}")


MAX_REPR = 200  # characters of a value an error message shows


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a bounded length (errors quote values a user wrote, of any size)."""
    brief = reprlib.Repr()  # a local instance: Python 3.11 has no keyword constructor
    brief.maxlevel, brief.maxlist, brief.maxdict, brief.maxstring, brief.maxother = 3, 8, 8, 80, 80
    text = brief.repr(value)
    return text if len(text) <= MAX_REPR else text[:MAX_REPR - 3] + "..."


def _type_name(types: Iterable[type]) -> str:
    names = {bool: "bool", int: "int", float: "float", str: "string", list: "list", NONE: "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _leaf_types(leaf: Any) -> tuple[tuple[type, ...], tuple[str, ...] | None]:
    if isinstance(leaf, Key):
        return leaf.types, leaf.choices
    if isinstance(leaf, bool):
        return (bool,), None
    if isinstance(leaf, int):
        return (int,), None
    if isinstance(leaf, float):
        return (float,), None
    if isinstance(leaf, str):
        return (str,), None
    if isinstance(leaf, list):
        return (list,), None
    return (NONE,), None


def _leaf_default(leaf: Any) -> Any:
    return copy.deepcopy(leaf.default if isinstance(leaf, Key) else leaf)


def _coerce(where: str, dotted: str, value: Any, leaf: Any) -> Any:
    """Check ``value`` against the schema leaf; return it (ints become floats for float keys)."""
    types, choices = _leaf_types(leaf)
    if isinstance(value, bool):
        ok = bool in types
    elif isinstance(value, int):
        ok = int in types or float in types
        if ok and int not in types:
            value = float(value)
    elif isinstance(value, float):
        ok = float in types
    elif isinstance(value, str):
        ok = str in types
        if not ok and float in types:  # YAML 1.1 style "1e-4" written as a quoted string
            try:
                value, ok = float(value), True
            except ValueError:
                ok = False
    elif value is None:
        ok = NONE in types
    elif isinstance(value, list):
        ok = list in types
        default = _leaf_default(leaf)
        if ok and isinstance(default, list) and default and value:
            value = _coerce_list(where, dotted, value, default)
    elif isinstance(value, dict):
        raise ConfigError(f"{where}: key '{dotted}' is a value ({_type_name(types)}), not a section")
    else:
        ok = False
    if not ok:
        raise ConfigError(
            f"{where}: key '{dotted}' expects {_type_name(types)}, got {type(value).__name__} {short_repr(value)}"
        )
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: key '{dotted}' must be one of {list(choices)}, got {short_repr(value)}")
    _check_range(where, dotted, value)
    return value


def _check_range(where: str, dotted: str, value: Any) -> None:
    bound = RANGES.get(dotted)
    if bound is None or value is None:
        return
    items = value if isinstance(value, list) else [value]
    bad = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool) and not bound.contains(v)]
    if bad:
        what = f"every element must be {bound.describe()}" if isinstance(value, list) else \
            f"must be {bound.describe()}"
        raise ConfigError(f"{where}: key '{dotted}' {what}, got {short_repr(value)}")


def _coerce_list(where: str, dotted: str, value: list, default: list) -> list:
    """Lists of numbers/bools stay lists of numbers/bools (element types follow the default)."""
    proto = default[0]
    if isinstance(proto, list):
        return value  # nested lists (kernel sizes): the model validates their shape
    out = []
    for item in value:
        if isinstance(proto, bool):
            good = isinstance(item, bool)
        elif isinstance(proto, (int, float)):
            good = isinstance(item, (int, float)) and not isinstance(item, bool)
            if good and isinstance(proto, float):
                item = float(item)
        else:
            good = isinstance(item, type(proto))
        if not good:
            raise ConfigError(
                f"{where}: key '{dotted}' expects a list of {type(proto).__name__}, got {short_repr(value)}"
            )
        out.append(item)
    return out


# --------------------------------------------------------------------------------------------
# The config object
# --------------------------------------------------------------------------------------------
class Config:
    """A tree of sections with attribute access (``cfg.TRAIN.BATCH_SIZE``), as in the seed."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", {})
        for key, value in (data or {}).items():
            self._data[key] = Config(value) if isinstance(value, dict) else value

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._data:
            raise AttributeError(f"config has no key '{name}'; keys are fixed by the schema")
        self._data[name] = Config(value) if isinstance(value, dict) else value

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __contains__(self, name: str) -> bool:
        return name in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Config({self.to_dict()!r})"

    def get(self, dotted: str) -> Any:
        """The value at a dotted key (``cfg.get("TRAIN.BATCH_SIZE")``)."""
        node: Any = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return node

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self._data.items()}

    def clone(self) -> Config:
        return Config(self.to_dict())

    def with_overrides(self, overrides: Sequence[Any] | dict[str, Any]) -> Config:
        """A validated copy with overrides applied (``["KEY", value, ...]``, ``KEY=VALUE`` or a dict)."""
        data = self.to_dict()
        items = overrides.items() if isinstance(overrides, dict) else parse_overrides(overrides)
        for dotted, value in items:
            _set_dotted(data, dotted, value, where="override")
        _check_consistency(data, where="override")
        return Config(data)

    def require(self, dotted: str, why: str = "") -> Any:
        """The value at ``dotted``; a clear error naming the key when it is empty."""
        value = self.get(dotted)
        if value in ("", None):
            reason = f" ({why})" if why else ""
            raise ConfigError(
                f"config key {dotted} is not set{reason}: set it in the YAML file or on the "
                f"command line, e.g. `{dotted} /path/to/...`"
            )
        return value

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def _set_dotted(data: dict, dotted: str, value: Any, where: str) -> None:
    try:
        leaf = _schema_node(dotted)
    except KeyError:
        raise _unknown_key_error(where, dotted) from None
    if isinstance(leaf, dict):
        raise ConfigError(f"{where}: '{dotted}' is a section, not a key; set one of its keys")
    value = _coerce(where, dotted, value, leaf)
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


# --------------------------------------------------------------------------------------------
# Loading with inheritance
# --------------------------------------------------------------------------------------------
def _validate_file(path: Path, data: dict, prefix: str = "", schema: dict = SCHEMA) -> dict:
    """Check every key of one file against the schema; return a plain nested dict of it."""
    out: dict[str, Any] = {}
    lines = getattr(data, "lines", {})
    for key, value in data.items():
        where = f"{path}:{lines[key]}" if key in lines else str(path)
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys must be strings, got {short_repr(key)}")
        dotted = f"{prefix}{key}"
        if not prefix and key in _INHERIT_KEYS:
            continue
        if key not in schema:
            raise _unknown_key_error(where, dotted)
        leaf = schema[key]
        if isinstance(leaf, dict):
            if value is None:
                continue  # an empty section
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{dotted}' is a section and needs KEY: value entries")
            out[key] = _validate_file(path, value, dotted + ".", leaf)
        else:
            if value is None and NONE not in _leaf_types(leaf)[0]:
                continue  # an empty value (official configs write `KEY:`): unset, the inherited value stays
            out[key] = _coerce(where, dotted, value, leaf)
    return out


def _merge(base: dict, new: dict) -> dict:
    """``new`` over ``base``: sections merge recursively, everything else (lists too) is replaced."""
    out = copy.deepcopy(base)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_file(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The merged content of ``path`` and everything it inherits from (schema not yet applied)."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"config inheritance cycle: {cycle}")
    raw = _read_yaml(path)
    own = _validate_file(path, raw)
    merged: dict[str, Any] = {}
    lines = getattr(raw, "lines", {})
    for inherit_key in _INHERIT_KEYS:
        if inherit_key not in raw:
            continue
        target = raw[inherit_key]
        where = f"{path}:{lines.get(inherit_key, '?')}"
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{where}: {inherit_key} must be a path to a YAML file")
        base_path = Path(os.path.expanduser(target))
        if not base_path.is_absolute():
            beside = path.parent / base_path  # relative to the naming file first
            # An official-style path (no "./" or "../") is relative to the working directory there.
            from_cwd = not target.startswith(".") and not beside.is_file() and base_path.is_file()
            base_path = base_path.resolve() if from_cwd else beside
        if not base_path.is_file():
            raise ConfigError(f"{where}: {inherit_key} file not found: {target} (looked at {base_path})")
        merged = _merge(merged, _resolve_file(base_path, (*chain, path)))
    return _merge(merged, own)


def _schema_defaults(node: dict = SCHEMA) -> dict:
    return {k: _schema_defaults(v) if isinstance(v, dict) else _leaf_default(v) for k, v in node.items()}


def parse_overrides(tokens: Sequence[Any]) -> list[tuple[str, Any]]:
    """Seed-style ``KEY VALUE`` pairs and ``KEY=VALUE`` tokens; string values are parsed as YAML."""
    items: list[tuple[str, Any]] = []
    tokens = list(tokens)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not isinstance(token, str):
            raise ConfigError(f"override: expected a key, got {short_repr(token)}")
        if "=" in token and not token.startswith("-"):
            key, text = token.split("=", 1)
            value: Any = _parse_yaml_value(text) if text != "" else ""
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise ConfigError(f"override: key '{token}' has no value (use KEY VALUE or KEY=VALUE)")
            key, raw = token, tokens[i + 1]
            value = (_parse_yaml_value(raw) if raw != "" else "") if isinstance(raw, str) else raw
            i += 2
        if not key or key.startswith("-"):
            raise ConfigError(f"override: '{token}' is not a config key")
        items.append((key, value))
    return items


def packaged_config_dir() -> Path:
    """The config tree shipped inside the package (the repository's ``configs/``)."""
    return Path(str(importlib.resources.files("tada") / "configs"))


def packaged_config_names() -> list[str]:
    """Names of the packaged project configs, relative to ``projects/`` without ``.yaml``."""
    projects = packaged_config_dir() / "projects"
    return sorted(p.relative_to(projects).with_suffix("").as_posix() for p in projects.rglob("*.yaml"))


def resolve_config_path(name: str | os.PathLike) -> Path:
    """A config file path, or the packaged config a short name names.

    An existing file wins. Otherwise ``name`` is looked up among the packaged configs: a path
    below ``configs/`` (``projects/tada/k400/tada2d_8x8.yaml``), or the trailing part of a project
    config's name (``k400/tada2d_8x8``, ``synthetic/tada2d``), which must match exactly one file.
    """
    path = Path(os.path.expanduser(name))
    if path.exists():  # a file, or something else read_yaml names in its error
        return path
    root = packaged_config_dir()
    text = path.as_posix().removeprefix("./").removeprefix("configs/")
    if (root / text).is_file():
        return root / text
    stem = text.removesuffix(".yaml")
    matches = [n for n in packaged_config_names() if n == stem or n.endswith("/" + stem)]
    if len(matches) == 1:
        return root / "projects" / f"{matches[0]}.yaml"
    if matches:
        raise ConfigError(f"config {str(name)!r} is ambiguous: it names {', '.join(matches)}; give more of the name")
    raise ConfigError(f"config file not found: {name} (not a file, nor a packaged config; `tada configs` lists them)")


def load_config(path: str | os.PathLike, overrides: Sequence[Any] | None = None) -> Config:
    """Load a YAML config with inheritance, apply overrides, validate everything, return a Config.

    ``path`` is a file or the name of a packaged config (:func:`resolve_config_path`).
    """
    data = _merge(_schema_defaults(), _resolve_file(resolve_config_path(path)))
    for dotted, value in parse_overrides(overrides or []):
        _set_dotted(data, dotted, value, where="command line")
    _check_consistency(data, where=f"{path} (with its overrides)" if overrides else str(path))
    return Config(data)


def _check_consistency(data: dict, *, where: str) -> None:
    """Relations between keys, checked once every file and override is applied."""
    d = data["DATA"]
    scales = d["TRAIN_JITTER_SCALES"]
    if len(scales) != 2 or scales[0] > scales[1]:
        raise ConfigError(f"{where}: DATA.TRAIN_JITTER_SCALES needs [min, max] with min <= max, got "
                          f"{short_repr(scales)}")
    area_fractions = scales[0] <= 1  # random resized crops: [min, max] fractions of the frame's area
    if area_fractions and scales[1] > 1:
        raise ConfigError(f"{where}: DATA.TRAIN_JITTER_SCALES {short_repr(scales)}: a minimum <= 1 means area "
                          "fractions (random resized crops), which need max <= 1; short sides need min >= 2")
    if not area_fractions and d["TRAIN_CROP_SIZE"] > scales[0]:
        raise ConfigError(f"{where}: DATA.TRAIN_CROP_SIZE {d['TRAIN_CROP_SIZE']} must be <= the smallest "
                          f"DATA.TRAIN_JITTER_SCALES {scales[0]}")
    if d["TEST_CROP_SIZE"] > d["TEST_SCALE"]:
        raise ConfigError(f"{where}: DATA.TEST_CROP_SIZE {d['TEST_CROP_SIZE']} must be <= DATA.TEST_SCALE "
                          f"{d['TEST_SCALE']}")
    if data["SHARD_ID"] >= data["NUM_SHARDS"]:
        raise ConfigError(f"{where}: SHARD_ID {data['SHARD_ID']} must be < NUM_SHARDS {data['NUM_SHARDS']}")


def default_config(overrides: Sequence[Any] | None = None) -> Config:
    """The schema's defaults (the official defaults) with overrides, for callers without a YAML file."""
    data = _schema_defaults()
    for dotted, value in parse_overrides(overrides or []):
        _set_dotted(data, dotted, value, where="override")
    return Config(data)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (temp file + rename)."""
    with atomic_open(path) as fh:
        fh.write(cfg.dump())
