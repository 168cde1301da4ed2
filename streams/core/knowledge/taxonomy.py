"""The national 部件/事件 taxonomy (GB/T 30428.2) and the line-aware YAML loading every data file uses.

Data files are edited by people: an error must name the file, the line and the field.
"""
from __future__ import annotations

import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

KINDS = {"B": "部件", "E": "事件"}
CODE_RE = re.compile(r"^[BE]\d{4}$")


class DataError(ValueError):
    """A data file (taxonomy, city, KB, corpus) that cannot be used. Message: file:line: field: problem."""

    def __init__(self, path: Path | str, line: int | None, field: str, problem: str) -> None:
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {field}: {problem}")


# ---------------------------------------------------------------- YAML with line numbers
class MarkedDict(dict[Hashable, object]):
    """A YAML mapping that remembers the (1-based) line of itself and of each key."""

    line: int = 0
    key_lines: dict[Hashable, int]


class MarkedList(list[object]):
    line: int = 0
    item_lines: list[int]


# A step on the path to a value in parsed YAML (pydantic's error ``loc``): a key or a list index.
Loc = tuple[int | str, ...]
Model = TypeVar("Model", bound=BaseModel)


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> MarkedDict:
    loader.flatten_mapping(node)
    result = MarkedDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise DataError(loader.name, key_node.start_mark.line + 1, str(key), "duplicate key")
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = value_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> MarkedList:
    result = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_marked_yaml(path: Path) -> Any:
    """Parse YAML keeping line numbers on mappings and lists; syntax errors become DataError.

    Any: whatever the file holds, until validate_marked checks it against its model."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(path, None, "(file)", f"cannot read: {exc.strerror or exc}") from exc
    loader = _LineLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise DataError(path, mark.line + 1 if mark else None, "(syntax)", str(exc.problem or exc)) from exc
    finally:
        loader.dispose()


def line_of(root: object, loc: Loc) -> int | None:
    """The line of the deepest node on the path `loc` (keys and list indexes) that exists."""
    node: object = root
    line: int | None = getattr(root, "line", None)
    for step in loc:
        if isinstance(node, MarkedDict) and step in node:
            line = node.key_lines.get(step, line)
            node = node[step]
        elif isinstance(node, MarkedList) and isinstance(step, int) and 0 <= step < len(node):
            line = node.item_lines[step]
            node = node[step]
        else:
            break
    return line


def field_path(loc: Loc) -> str:
    out = ""
    for step in loc:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or "(root)"


def validate_marked(model: type[Model], data: object, path: Path) -> Model:
    """Validate with pydantic; the first error is raised as DataError with file and line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        raise DataError(path, line_of(data, loc), field_path(loc), err["msg"]) from exc


# ---------------------------------------------------------------- the taxonomy
Urgency = Literal["normal", "urgent", "emergency"]


class _CategoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=CODE_RE.pattern)
    name: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    urgency: Urgency


class _ClassIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    name_en: str


class _TaxonomyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str
    kinds: dict[str, str]
    classes: dict[str, _ClassIn]
    categories: list[_CategoryIn] = Field(min_length=1)


@dataclass(frozen=True)
class Category:
    code: str          # e.g. "E0103"
    name: str          # Chinese name, e.g. 噪声扰民
    name_en: str
    kind: str          # 部件 | 事件
    class_code: str    # e.g. "E01"
    class_name: str    # e.g. 市容环境
    urgency: str       # normal | urgent | emergency


class Taxonomy:
    def __init__(self, version: str, categories: list[Category]) -> None:
        self.version = version
        self.categories = categories
        self.by_code = {c.code: c for c in categories}
        self.by_name = {c.name: c for c in categories}

    def get(self, code_or_name: str) -> Category | None:
        key = code_or_name.strip()
        return self.by_code.get(key.upper()) or self.by_name.get(key)

    def __iter__(self) -> Iterator[Category]:
        return iter(self.categories)

    def __len__(self) -> int:
        return len(self.categories)

    @classmethod
    def load(cls, path: Path) -> Taxonomy:
        raw = load_marked_yaml(path)
        parsed = validate_marked(_TaxonomyIn, raw, path)
        cats: list[Category] = []
        seen_names: set[str] = set()
        for i, c in enumerate(parsed.categories):
            line = raw["categories"].item_lines[i]
            class_code = c.code[:3]
            if class_code not in parsed.classes:
                raise DataError(path, line, f"categories[{i}].code",
                                f"class {class_code} of {c.code} is not declared in classes")
            if c.code in {x.code for x in cats}:
                raise DataError(path, line, f"categories[{i}].code", f"duplicate code {c.code}")
            if c.name in seen_names:
                raise DataError(path, line, f"categories[{i}].name", f"duplicate name {c.name}")
            seen_names.add(c.name)
            cats.append(Category(c.code, c.name, c.name_en, KINDS[c.code[0]], class_code,
                                 parsed.classes[class_code].name, c.urgency))
        return cls(parsed.version, cats)
