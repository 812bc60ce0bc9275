"""Payload validation against a job type's ``payload_schema``.

A schema is a msgspec ``Struct``, a dataclass or a ``TypedDict`` (or ``None``: any JSON object).
Payloads arrive as decoded JSON, so validation is strict about types (``"5"`` is not an ``int``)
while still reading the string forms JSON has for datetimes, dates, UUIDs and decimals.

Unknown fields
    A key that the schema does not declare is rejected with its path, at every depth, for all
    three kinds of schema (so a misspelt optional field is caught at enqueue time rather than
    silently dropped). Pass ``forbid_unknown_fields=False`` to ignore such keys instead; a
    ``Struct`` declared with ``forbid_unknown_fields=True`` rejects them either way.

Errors
    A payload that does not fit raises :class:`~workqueue.errors.PayloadValidationError` whose
    ``field`` is a path rooted at ``payload`` (``payload.to``, ``payload.items[2].name``) and
    whose ``problem`` says what is wrong. Payload *values* never appear in the message.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, overload

import msgspec
import msgspec.inspect as mi

from workqueue.errors import PayloadValidationError

__all__ = [
    "PAYLOAD_ROOT",
    "check_schema",
    "schema_json",
    "to_builtins",
    "validate_payload",
]

#: The name the field paths of payload errors start from.
PAYLOAD_ROOT = "payload"

T = TypeVar("T")

_AT_SUFFIX = re.compile(r" - at `\$(?P<path>.*)`$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>.*)`$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>.*)`$", re.DOTALL)
# msgspec quotes the offending value in these; a payload value must not reach an error message.
_INVALID_VALUE = re.compile(r"^Invalid (enum )?value\b", re.DOTALL)


def _kind(schema: object) -> str | None:
    """``"struct"``, ``"dataclass"`` or ``"typeddict"`` for a supported schema, else ``None``."""
    if isinstance(schema, type):
        if issubclass(schema, msgspec.Struct):
            return "struct"
        if dataclasses.is_dataclass(schema):
            return "dataclass"
        if typing.is_typeddict(schema) or (
            issubclass(schema, dict) and hasattr(schema, "__required_keys__")
        ):
            return "typeddict"
    return None


def check_schema(schema: object) -> None:
    """Raise ``TypeError`` if ``schema`` cannot serve as a ``payload_schema``.

    It must be ``None``, a msgspec ``Struct``, a dataclass or a ``TypedDict`` whose field types
    msgspec can decode (unresolvable forward references and unsupported types fail here, when
    plugins load, rather than on the first enqueue).
    """
    if schema is None:
        return
    if _kind(schema) is None:
        raise TypeError(
            f"payload_schema must be a msgspec Struct, a dataclass or a TypedDict, not {schema!r}"
        )
    try:
        _type_info(schema)
        # Also proves every field type has a JSON form (a custom class has none: no JSON value
        # could ever pass), and that schema_json() works for the docs and the OpenAPI spec.
        msgspec.json.schema(schema)
    except Exception as exc:  # msgspec raises TypeError, NameError... for unusable types
        raise TypeError(f"payload_schema {schema!r} is not usable: {_one_line(exc)}") from exc


@overload
def validate_payload(
    schema: None, payload: Any, *, forbid_unknown_fields: bool = ...
) -> dict[str, Any]: ...


@overload
def validate_payload(schema: type[T], payload: Any, *, forbid_unknown_fields: bool = ...) -> T: ...


def validate_payload(
    schema: type[Any] | None,
    payload: Any,
    *,
    forbid_unknown_fields: bool = True,
) -> Any:
    """Check ``payload`` against ``schema`` and return the typed object the handler receives.

    With ``schema=None`` the payload is returned unchanged; it must be a JSON object (a ``dict``
    with ``str`` keys). An instance of the schema itself (a ``Struct`` or dataclass built in
    Python) is checked the same way as its JSON form. Raises
    :class:`~workqueue.errors.PayloadValidationError` naming the field path.
    """
    if schema is None:
        if not isinstance(payload, dict):
            raise PayloadValidationError(
                PAYLOAD_ROOT, f"Expected `object`, got `{_json_kind(payload)}`"
            )
        if not all(isinstance(key, str) for key in payload):
            raise PayloadValidationError(PAYLOAD_ROOT, "object keys must be strings")
        return payload
    if _kind(schema) in ("struct", "dataclass") and isinstance(payload, schema):
        payload = to_builtins(payload)
    try:
        typed = msgspec.convert(payload, type=schema, strict=True)
    except msgspec.ValidationError as exc:
        field, problem = _translate(str(exc))
        raise PayloadValidationError(field, problem) from None
    if forbid_unknown_fields:
        _check_unknown_fields(_type_info(schema), payload, PAYLOAD_ROOT)
    return typed


def to_builtins(obj: Any) -> Any:
    """Turn a typed payload (``Struct``, dataclass, ``TypedDict``, nested) back into JSON data.

    Datetimes, dates, UUIDs and decimals become strings, bytes become base64 strings, enums
    their values, and mapping keys strings.
    """
    return msgspec.to_builtins(obj, str_keys=True)


def schema_json(schema: type[Any] | None) -> dict[str, Any] | None:
    """The JSON Schema (draft 2020-12, as msgspec writes it) of ``schema``; ``None`` for none.

    Struct, dataclass and TypedDict definitions sit under ``$defs`` with a top-level ``$ref``.
    """
    if schema is None:
        return None
    return msgspec.json.schema(schema)


# ---------------------------------------------------------------------------------------------
# Error paths
# ---------------------------------------------------------------------------------------------


def _translate(message: str) -> tuple[str, str]:
    """Split a msgspec validation message into a ``payload...`` field path and a problem."""
    path = ""
    at = _AT_SUFFIX.search(message)
    if at is not None:
        path = at.group("path")
        message = message[: at.start()]
    field = PAYLOAD_ROOT + path
    missing = _MISSING.match(message)
    if missing is not None:
        return _child(field, missing.group("name")), "missing required field"
    unknown = _UNKNOWN.match(message)
    if unknown is not None:
        return _child(field, unknown.group("name")), "unknown field"
    if _INVALID_VALUE.match(message):
        return field, "Invalid value: not one of the allowed values"
    return field, message


def _child(path: str, key: str) -> str:
    """``path.key`` for identifier keys, else ``path["key"]``."""
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Unknown fields: msgspec ignores them for dataclasses and TypedDicts, so walk the type tree
# alongside the (already valid) payload and reject the first key no object type declares.
# ---------------------------------------------------------------------------------------------


_TYPE_INFO: dict[object, mi.Type] = {}


def _type_info(schema: object) -> mi.Type:
    """msgspec's description of ``schema``, computed once per schema."""
    info = _TYPE_INFO.get(schema)
    if info is None:
        info = _TYPE_INFO[schema] = mi.type_info(schema)
    return info


def _check_unknown_fields(info: mi.Type, value: Any, path: str) -> None:
    while isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.StructType | mi.DataclassType | mi.TypedDictType):
        _check_object(info, value, path)
    elif isinstance(info, mi.CollectionType):  # list, set, frozenset, tuple[X, ...]
        if isinstance(value, list | tuple):
            for index, item in enumerate(value):
                _check_unknown_fields(info.item_type, item, f"{path}[{index}]")
    elif isinstance(info, mi.TupleType):
        if isinstance(value, list | tuple):
            for index, (item_info, item) in enumerate(zip(info.item_types, value, strict=False)):
                _check_unknown_fields(item_info, item, f"{path}[{index}]")
    elif isinstance(info, mi.DictType):
        if isinstance(value, Mapping):
            for key, item in value.items():
                _check_unknown_fields(info.value_type, item, _child(path, str(key)))
    elif isinstance(info, mi.UnionType) and isinstance(value, Mapping):
        member = _union_member_for_object(info, value)
        if member is not None:
            _check_unknown_fields(member, value, path)


def _check_object(
    info: mi.StructType | mi.DataclassType | mi.TypedDictType, value: Any, path: str
) -> None:
    if not isinstance(value, Mapping):
        return  # an array-like Struct, or a value msgspec accepted in another form
    fields = {field.encode_name: field for field in info.fields}
    allowed = set(fields)
    if isinstance(info, mi.StructType) and info.tag_field is not None:
        allowed.add(info.tag_field)
    for key, item in value.items():
        if key not in allowed:
            listed = ", ".join(sorted(fields)) or "none"
            raise PayloadValidationError(
                _child(path, str(key)), f"unknown field; allowed fields: {listed}"
            )
        if key in fields:
            _check_unknown_fields(fields[key].type, item, _child(path, key))


def _union_member_for_object(info: mi.UnionType, value: Mapping[Any, Any]) -> mi.Type | None:
    """The member of a union that a JSON object decoded as (msgspec allows only one, or a
    tagged union of Structs)."""
    candidates: list[mi.Type] = []
    for member in info.types:
        inner = member
        while isinstance(inner, mi.Metadata):
            inner = inner.type
        if isinstance(inner, mi.StructType) and inner.tag_field is not None:
            if value.get(inner.tag_field) == inner.tag:
                return inner
            continue
        if isinstance(inner, mi.StructType | mi.DataclassType | mi.TypedDictType | mi.DictType):
            candidates.append(inner)
    return candidates[0] if len(candidates) == 1 else None
