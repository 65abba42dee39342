"""YAML → pydantic model, with every problem pointing at file, line and column.

Generic over the root model so that the job spec and the daemon config share it. The node tree
is composed with SafeLoader, turned into plain data while each key path's marks are recorded,
validated by pydantic, and each error's `loc` is mapped back to the marks. All problems of a
file come out together in one `SpecError`; nothing a user can write ends in a traceback.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

M = TypeVar("M", bound=BaseModel)
Key = tuple[str | int, ...]

# A job file is a few dozen keys; the daemon's spool and API take files from other people, so
# what one file may cost is bounded before any YAML is parsed or expanded.
MAX_BYTES = 1 << 20
MAX_DEPTH = 32  # mappings/lists inside each other (a job file uses 3)
MAX_VALUES = 10_000  # values after anchors, aliases and merge keys are expanded
SHOW = 80  # characters of a written value or key quoted in a message


def shorten(text: str) -> str:
    """`text` for a message: at most SHOW characters, cut with "…"."""
    return text if len(text) <= SHOW else text[: SHOW - 1] + "…"


def _size_message(size: int) -> str:
    # A pipe or device has no size: then all that is known is that it went on past the limit.
    said = f"is {size:,} bytes" if size > MAX_BYTES else "goes on past 1 MiB"
    return (
        f"the file {said}; a job file is at most {MAX_BYTES:,} bytes (1 MiB; a job needs "
        "a few dozen keys): is this the right file?"
    )


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file. `line`/`column` are 1-based, None for file-level problems;
    `path` is the dotted key path (`stop.plateau.patience`), "" when no key is concerned;
    `shown` is the offending value as written in the file (None when there is none to show)."""

    file: str
    line: int | None
    column: int | None
    path: str
    value: object
    message: str
    shown: str | None = None

    def __post_init__(self) -> None:
        if self.shown is not None and len(self.shown) > SHOW:
            object.__setattr__(self, "shown", shorten(self.shown))

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        what = shorten(self.path) + (f" = {self.shown}" if self.shown is not None else "")
        return f"{where}: {what}: {self.message}" if what else f"{where}: {self.message}"


class SpecError(Exception):
    """A file that cannot be used; `.problems` in file order, `str()` is the full report."""

    def __init__(self, problems: list[Problem], what: str = "job spec") -> None:
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.column or 0))
        n = len(self.problems)
        file = self.problems[0].file if self.problems else "<spec>"
        head = f"{file}: {n} problem{'s' if n != 1 else ''} in the {what}"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


def file_problem(source: str, message: str, what: str = "job spec") -> SpecError:
    """A SpecError about the file as a whole (no line)."""
    return SpecError([Problem(source, None, None, "", None, message)], what)


def read_text(path: Path, what: str = "job spec") -> str:
    """The file's text; SpecError (not OSError/UnicodeError) when it cannot be read as UTF-8."""
    source = str(path)
    try:
        with path.open("rb") as f:
            # One byte past the limit tells a file that is too large without reading it all.
            raw = f.read(MAX_BYTES + 1)
            if len(raw) > MAX_BYTES:
                size = os.fstat(f.fileno()).st_size
                raise file_problem(source, _size_message(size), what)
    except FileNotFoundError:
        raise file_problem(source, "no such file: check the path", what) from None
    except IsADirectoryError:
        raise file_problem(source, "is a directory: give the path of a .yaml file", what) from None
    except PermissionError:
        raise file_problem(source, "permission denied: the file is not readable", what) from None
    except OSError as exc:
        message = f"cannot read the file: {exc.strerror or exc}"
        raise file_problem(source, message, what) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"is not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        raise SpecError([Problem(source, line, column, "", None, message)], what) from None


# --- YAML with positions


@dataclass(frozen=True)
class _Pos:
    key: yaml.Mark | None  # where the key is written (None for list items and the root)
    value: yaml.Mark
    text: str | None  # a scalar's source text


def dotted(path: Key) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


class _Composer:
    """Builds plain Python data from the node tree and records each key path's marks."""

    def __init__(self, loader: yaml.SafeLoader, source: str) -> None:
        self.loader, self.source = loader, source
        self.positions: dict[Key, _Pos] = {}
        self.problems: list[Problem] = []
        self._stack: set[int] = set()
        self._built: set[int] = set()  # nodes built once: building one again is an alias
        self._values = 0
        self._aliased = False

    def problem(self, mark: yaml.Mark, path: Key, message: str, text: str | None = None) -> None:
        line, column = mark.line + 1, mark.column + 1
        self.problems.append(Problem(self.source, line, column, dotted(path), text, message, text))

    def limit(self, mark: yaml.Mark, message: str) -> SpecError:
        return SpecError([Problem(self.source, mark.line + 1, mark.column + 1, "", None, message)])

    def build(self, node: yaml.Node, path: Key) -> object:
        if id(node) in self._stack:
            self.problem(node.start_mark, path, "an alias refers to itself; remove the loop")
            return None
        if len(path) > MAX_DEPTH:
            raise self.limit(node.start_mark, _depth_message())
        self._values += 1
        self._aliased |= id(node) in self._built
        self._built.add(id(node))
        if self._values > MAX_VALUES:
            raise self.limit(node.start_mark, _values_message(self._aliased))
        self._stack.add(id(node))
        try:
            return self._build(node, path)
        finally:
            self._stack.discard(id(node))

    def _build(self, node: yaml.Node, path: Key) -> object:
        if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_TAGS:
            # Mappings and lists are built here, not by the constructor: refuse their tags
            # rather than drop them silently.
            self.problem(node.start_mark, path, f"YAML tags like {node.tag} are not allowed")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                text = item.value if isinstance(item, yaml.ScalarNode) else None
                self.positions[(*path, i)] = _Pos(None, item.start_mark, text)
                items.append(self.build(item, (*path, i)))
            return items
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            why = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else str(exc)
            message = f"cannot read this value: {why} (YAML tags are not allowed)"
            self.problem(node.start_mark, path, message, node.value)
            return None

    def _mapping(self, node: yaml.MappingNode, path: Key) -> dict[str, object]:
        # Merge keys copy entries into the mapping itself, so nested merges of merges grow
        # exponentially inside PyYAML before any value is built: count them first.
        if _merged_size(node, {}) > MAX_VALUES:
            raise self.limit(node.start_mark, _values_message(True))
        self.loader.flatten_mapping(node)  # applies `<<: *anchor` merge keys
        out: dict[str, object] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                self.problem(knode.start_mark, path, "a key must be a plain word")
                continue
            # The source text, not the constructed value: `on:` must not become True.
            key, sub = knode.value, (*path, knode.value)
            if key in out:
                first = self.positions[sub].value.line + 1
                self.problem(
                    knode.start_mark,
                    sub,
                    f"duplicate key (first set on line {first}); YAML would silently keep "
                    "only the last one: remove one of them",
                )
            text = vnode.value if isinstance(vnode, yaml.ScalarNode) else None
            self.positions[sub] = _Pos(knode.start_mark, vnode.start_mark, text)
            out[key] = self.build(vnode, sub)
        return out


def _depth_message() -> str:
    return (
        f"mappings and lists are nested more than {MAX_DEPTH} levels deep; a job file uses "
        "3 (e.g. stop: plateau: patience:): is this the right file?"
    )


def _values_message(aliased: bool) -> str:
    if aliased:
        return (
            f"anchors and aliases (&name, *name, <<: *name) expand to more than {MAX_VALUES:,} "
            "values (a 'billion laughs' file); write the values out instead of nesting aliases"
        )
    return f"the file holds more than {MAX_VALUES:,} values; a job file needs a few dozen"


def _merged_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Entries a mapping holds once its merge keys are applied (an upper bound), memoised per
    node so that shared anchors are counted without being expanded."""
    if not isinstance(node, yaml.MappingNode):
        return 1
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_VALUES + 1  # a merge loop counts as too many
    total = 0
    for key, value in node.value:
        if key.tag == "tag:yaml.org,2002:merge":
            subs = value.value if isinstance(value, yaml.SequenceNode) else [value]
            total += sum(_merged_size(sub, memo) for sub in subs)
        else:
            total += 1
        if total > MAX_VALUES:
            break
    memo[id(node)] = total
    return total


_HINTS = {
    "found character '\\t'": "YAML indentation must use spaces, not tabs",
    "mapping values are not allowed": "check the indentation, and quote values that contain ': '",
    "expected a single document": "put one document per file: remove the extra `---`",
}


def _yaml_problem(exc: yaml.YAMLError, source: str, text: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = ", ".join(s for s in (exc.context, exc.problem) if s)
        hint = next((h for k, h in _HINTS.items() if k in str(exc)), "")
        message = f"YAML syntax error: {what}" + (f" — {hint}" if hint else "")
        return Problem(source, mark.line + 1, mark.column + 1, "", None, message)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = f"character {chr(exc.character)!r} is not allowed in YAML; remove it"
        return Problem(source, line, column, "", None, message)
    return Problem(source, None, None, "", None, f"YAML error: {exc}")


class _Limited(Exception):
    def __init__(self, where: tuple[int | None, int | None], message: str) -> None:
        self.where, self.message = where, message


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts nodes and depth while composing: PyYAML composes recursively and
    in pure Python (a 1 MB list of numbers took 5 s), so a file is refused as soon as it
    holds more nodes, or deeper ones, than a job file can need. An alias is one node here;
    what it expands to is counted by `_Composer`."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._nodes = 0
        self._depth = 0

    def _where(self) -> tuple[int | None, int | None]:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        mark = event.start_mark
        return (mark.line + 1, mark.column + 1) if mark is not None else (None, None)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._nodes += 1
        if self._nodes > MAX_VALUES:
            raise _Limited(self._where(), _values_message(False))
        if self._depth >= MAX_DEPTH:
            raise _Limited(self._where(), _depth_message())
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str, source: str, empty: str, top: str) -> tuple[object, _Composer]:
    if len(text) > MAX_BYTES:
        raise file_problem(source, _size_message(len(text.encode("utf-8", "replace"))))
    try:
        # The reader rejects control characters already when it is created.
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_problem(exc, source, text)]) from None
    composer = _Composer(loader, source)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise SpecError([_yaml_problem(exc, source, text)]) from None
        except _Limited as exc:
            problem = Problem(source, *exc.where, "", None, exc.message)
            raise SpecError([problem]) from None
        if node is None:
            raise file_problem(source, f"the file is empty: {empty}")
        if not isinstance(node, yaml.MappingNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
            mark = node.start_mark
            message = f"the top level must be a mapping of keys ({top}), found {kind}"
            raise SpecError([Problem(source, mark.line + 1, mark.column + 1, "", None, message)])
        composer.positions[()] = _Pos(None, node.start_mark, None)
        return composer.build(node, ()), composer
    finally:
        loader.dispose()


# --- pydantic errors → problems


def unwrap_model(annotation: Any) -> type[BaseModel] | None:
    """The model class inside `X`, `X | None` or `Annotated[X, …]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, Annotated):
        for arg in get_args(annotation):
            found = unwrap_model(arg)
            if found is not None:
                return found
    return None


def all_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """`model` and every section model below it, depth first."""
    out = [model]
    for field in model.model_fields.values():
        sub = unwrap_model(field.annotation)
        if sub is not None:
            out += all_models(sub)
    return out


def _key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        sub = unwrap_model(field.annotation)
        if sub is not None:
            out += _key_paths(sub, f"{prefix}{name}.")
    return out


_TYPE_MESSAGES = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text (put it in quotes if YAML reads it as a number or date)",
    "path_type": "must be a file path",
    "list_type": "must be a list, e.g. [a, b]",
    "tuple_type": "must be a list, e.g. [a, b]",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "multiple_of": "must be a multiple of {multiple_of}",
    "literal_error": "must be one of: {expected}",
    "string_too_short": "must not be empty",
}
_SECTION_TYPES = {"model_type", "model_attributes_type", "dict_type"}


class _Mapper:
    """Turns one pydantic error into problems located in the YAML."""

    def __init__(self, root: type[BaseModel], composer: _Composer, data: object) -> None:
        self.root, self.positions, self.data = root, composer.positions, data
        self.source = composer.source

    def model_at(self, path: Key) -> type[BaseModel] | None:
        model: type[BaseModel] | None = self.root
        for part in path:
            if isinstance(part, int):
                continue
            if model is None or part not in model.model_fields:
                return None
            model = unwrap_model(model.model_fields[part].annotation)
        return model

    def field_at(self, path: Key) -> FieldInfo | None:
        names = [i for i, part in enumerate(path) if isinstance(part, str)]
        if not names:
            return None
        parent = self.model_at(path[: names[-1]])
        return parent.model_fields.get(str(path[names[-1]])) if parent else None

    def unknown_key(self, path: Key) -> str:
        key, parent = shorten(str(path[-1])), self.model_at(path[:-1])
        allowed = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(key.lower(), allowed, n=1, cutoff=0.6)
        if close:
            hint = f"; did you mean `{close[0]}`?"
        else:
            # The right key in the wrong section (`patience` directly under `stop`).
            paths = _key_paths(self.root)
            homes = [p.rpartition(".")[0] for p in paths if p.rpartition(".")[2] == key]
            hint = f"; it belongs under `{homes[0]}`." if homes and homes[0] else "."
        return f"unknown key `{key}`{hint} Allowed here: {', '.join(allowed)}"

    def message(self, err: Mapping[str, Any], path: Key) -> str:
        kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
        field = self.field_at(path)
        about = f" — {field.description}" if field is not None and field.description else ""
        if kind == "missing":
            return f"required key `{path[-1]}` is missing{about}"
        if kind == "extra_forbidden":
            return self.unknown_key(path)
        if kind in _SECTION_TYPES:
            model = self.model_at(path)
            keys = ", ".join(model.model_fields) if model else ""
            off = ", or false/null to switch it off" if model and "enabled" in keys else ""
            return f"must be a mapping with keys: {keys}{off}"
        if kind in _TYPE_MESSAGES:
            empty = "is empty; " if value is None else ""
            return f"{empty}{_TYPE_MESSAGES[kind].format(**ctx)}{about}"
        return str(err["msg"])

    def mark(self, path: Key, kind: str) -> yaml.Mark:
        """The key for an unknown key, else the value; a key the user did not write (missing,
        or a default a cross-field check is about) points at the nearest written key above."""
        pos = self.positions.get(path)
        if pos is not None:
            return (pos.key or pos.value) if kind == "extra_forbidden" else pos.value
        for n in range(len(path) - 1, -1, -1):
            pos = self.positions.get(path[:n])
            if pos is not None:
                return pos.key or pos.value
        return self.positions[()].value

    def shown(self, path: Key, value: object) -> str:
        pos = self.positions.get(path)
        if pos is not None and pos.text is not None:
            return pos.text or "(empty)"
        if isinstance(value, dict):
            return "{…}"
        return "[…]" if isinstance(value, list) else repr(value)

    def lookup(self, path: Key) -> object:
        data = self.data
        for part in path:
            if isinstance(data, dict):
                data = data.get(part)
            elif isinstance(data, list) and isinstance(part, int) and part < len(data):
                data = data[part]
            else:
                return None
        return data

    def problems(self, err: Mapping[str, Any]) -> list[Problem]:
        loc: Key = tuple(err["loc"])
        kind, ctx = err["type"], err.get("ctx") or {}
        # A check that spans keys (see `fail`) names the key each finding is about.
        cross = "problems" in ctx
        subs = (
            [((*loc, *_split(p)), m) for p, m in ctx["problems"]]
            if cross
            else [(loc, self.message(err, loc))]
        )
        out = []
        for path, message in subs:
            mark = self.mark(path, kind)
            value = self.lookup(path) if cross else err.get("input")
            shown = None if kind in {"missing", "extra_forbidden"} else self.shown(path, value)
            line, column = mark.line + 1, mark.column + 1
            out.append(Problem(self.source, line, column, dotted(path), value, message, shown))
        return out


def _under(path: str, paths: set[str]) -> bool:
    return any(path == p or path.startswith((p + ".", p + "[")) for p in paths if p)


def _split(path: str) -> Key:
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


def validate_yaml(
    root: type[M],
    text: str,
    source: str,
    *,
    empty: str,
    prepare: Callable[[object], None] | None = None,
    what: str = "job spec",
    context: Mapping[str, object] | None = None,
) -> M:
    """Parse YAML `text` into `root`; SpecError with every problem, located.

    `empty` tells what an empty file lacks; `prepare` may rewrite the plain data in place
    before validation (e.g. resolve relative paths). Validators see `context={"yaml": True}`
    plus `context`.
    """
    top = ", ".join(f"{k}:" for k in list(root.model_fields)[:2]) + ", …"
    try:
        data, composer = _compose(text, source, empty, top)
    except SpecError as exc:
        raise SpecError(exc.problems, what) from None
    if prepare is not None:
        prepare(data)
    problems = list(composer.problems)
    try:
        model = root.model_validate(data, context={**(context or {}), "yaml": True})
    except ValidationError as exc:
        mapper = _Mapper(root, composer, data)
        # A value the YAML reading already complained about (an alias loop, an unknown tag)
        # reached pydantic as None: a second message about it would only be noise.
        seen = {p.path for p in problems}
        for err in exc.errors(include_url=False):
            problems += [p for p in mapper.problems(err) if not _under(p.path, seen)]
        raise SpecError(problems, what) from None
    if problems:
        raise SpecError(problems, what)
    return model


def cross_field(findings: list[tuple[str, str]]) -> PydanticCustomError:
    """The error for a check that spans keys: each finding is (key path relative to the model
    that checks, message), so every one is reported at its own key's line."""
    summary = "; ".join(f"{path}: {message}" for path, message in findings)
    return PydanticCustomError(
        "cross_field", "{summary}", {"summary": summary, "problems": findings}
    )
