"""Reading a YAML config safely: line numbers for every error, bounded values and messages.

Hostile files must end in a one-line ConfigError: a config that is not UTF-8, an alias bomb (a
few hundred bytes whose aliases expand to billions of nodes), a null where a value is needed, or a
number that is not finite. Error messages show values through `reprlib`, so they stay short
whatever the value.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable

import yaml

from ..errors import ConfigError

# Nodes a config may expand to, counting every alias expansion (LLTFI's master list has ~150).
MAX_NODES = 20_000
MAX_TEXT = 1 << 20  # bytes: a config is a page of YAML
MAX_DEPTH = 64      # nesting levels (LLTFI's configs use 5)

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster, same marks
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 40, 40


def short(value: object) -> str:
    """A repr of at most ~100 characters, computed without walking the whole value."""
    return _SHORT.repr(value)


def decode(data: bytes, source: str) -> str:
    """Config bytes as text: UTF-8 (with or without a BOM) or an error naming the bad byte."""
    if len(data) > MAX_TEXT:
        raise ConfigError(f"{source}: more than {MAX_TEXT:,} bytes is too large for a configuration")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{source}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                          "save the file as UTF-8") from None


def compose(text: str, source: str) -> yaml.Node | None:
    """The node tree of one YAML document, refused when aliases expand it beyond MAX_NODES."""
    try:
        _check_depth(text, source)  # before composing: the composers recurse (libyaml's to a segfault)
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())[:300]}") from None
    if root is not None:
        _count_nodes(root, source)
    return root


def _check_depth(text: str, source: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, reading the parser's event stream (iterative)."""
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(f"{source}:{event.start_mark.line + 1}: the configuration nests deeper than "
                                  f"{MAX_DEPTH} levels")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _count_nodes(root: yaml.Node, source: str) -> None:
    count, stack = 0, [root]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ConfigError(f"{source}:{node.start_mark.line + 1}: the configuration expands to more than "
                              f"{MAX_NODES:,} YAML nodes (aliases?); write it out plainly")
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))


class Reader:
    """Walks a composed YAML tree keeping line numbers for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(f"{self.source}:{node.start_mark.line + 1}: {message}")

    def line(self, node: yaml.Node) -> int:
        return node.start_mark.line + 1

    def mapping(self, node: yaml.Node, where: str, known: tuple[str, ...]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{where} must be a mapping of keys (got {self._kind(node)})")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, f"{where}: keys must be plain names")
            key = key_node.value
            if key not in known:
                raise self.fail(key_node, f"unknown key {short(key)} in {where} (known: {', '.join(known)})")
            if key in out:
                raise self.fail(key_node, f"duplicate key '{key}' in {where}")
            out[key] = value_node
        return out

    @staticmethod
    def _kind(node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        return short(node.value) if node.value != "" else "nothing"

    def value(self, node: yaml.Node):
        """The Python value of a node (safe constructors only)."""
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:  # ValueError: ints over 4,300 digits
            raise self.fail(node, f"cannot read this value: {' '.join(str(exc).split())[:200]}") from None
        finally:
            loader.dispose()

    def required(self, node: yaml.Node, key: str):
        value = self.value(node)
        if value is None:
            raise self.fail(node, f"{key}: a value is required (got nothing/null)")
        return value

    def scalar(self, node: yaml.Node, key: str, kind: type, check: Callable | None = None, rule: str = ""):
        value = self.required(node, key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(node, f"{key}: expected {'a number' if kind is float else kind.__name__}, "
                                  f"got {short(value)}")
        if kind is float and not math.isfinite(value):
            raise self.fail(node, f"{key}: {value!r} is not a finite number")
        if check is not None and not check(value):
            raise self.fail(node, f"{key}: {short(value)} is not allowed ({rule})")
        return value

    def integer(self, node: yaml.Node, key: str, low: int, high: int) -> int:
        return self.scalar(node, key, int, lambda v: low <= v <= high, f"an integer {low:,}..{high:,}")

    def boolean(self, node: yaml.Node, key: str) -> bool:
        value = self.required(node, key)
        if isinstance(value, str) and value.lower() in ("true", "false"):  # LLTFI writes True/False
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise self.fail(node, f"{key}: expected True or False, got {short(value)}")
        return value

    def choice(self, node: yaml.Node, key: str, choices) -> str:
        value = self.required(node, key)
        if not isinstance(value, str) or value not in choices:
            raise self.fail(node, f"{key}: {short(value)} is not one of {', '.join(map(str, choices))}")
        return value

    def strings(self, node: yaml.Node, key: str) -> list[str]:
        value = self.required(node, key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return [str(value)]
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                  for v in value):
            raise self.fail(node, f"{key}: expected a name or a list of names, got {short(value)}")
        return [str(v) for v in value]
