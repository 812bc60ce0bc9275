"""Payload validation against msgspec Structs, dataclasses and TypedDicts (workqueue.schema)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import uuid
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import msgspec
import pytest

from workqueue.errors import PayloadValidationError
from workqueue.schema import check_schema, schema_json, to_builtins, validate_payload

# Schemas live at module level: with postponed annotations msgspec resolves field types from
# the module's globals.


class Item(msgspec.Struct):
    name: str
    qty: int = 1


class Email(msgspec.Struct):
    to: str
    subject: str = ""
    items: list[Item] = []
    send_at: datetime.datetime | None = None
    headers: dict[str, str] = {}


class StrictEmail(msgspec.Struct, forbid_unknown_fields=True):
    to: str


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


@dataclasses.dataclass
class Shape:
    points: list[Point]
    label: str | None = None

    def __post_init__(self) -> None:
        if self.label == "forbidden":
            raise ValueError("label may not be 'forbidden'")


class Address(TypedDict):
    city: str
    zip: NotRequired[str]


class Person(TypedDict):
    name: str
    addresses: list[Address]


class Color(enum.Enum):
    RED = "red"


class Limits(msgspec.Struct):
    count: Annotated[int, msgspec.Meta(ge=1, le=10)]
    mode: Literal["fast", "slow"] = "fast"
    color: Color = Color.RED
    ident: uuid.UUID | None = None


class Circle(msgspec.Struct, tag="circle"):
    radius: float


class Square(msgspec.Struct, tag="square"):
    side: float


class Drawing(msgspec.Struct):
    shapes: list[Circle | Square]


def _error(schema: Any, payload: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(PayloadValidationError) as caught:
        validate_payload(schema, payload, **kwargs)
    assert str(caught.value) == f"{caught.value.field}: {caught.value.problem}"
    return caught.value.field, caught.value.problem


# ---------------------------------------------------------------------------------------------
# Success returns the typed object
# ---------------------------------------------------------------------------------------------


def test_a_struct_payload_becomes_the_struct() -> None:
    typed = validate_payload(
        Email,
        {"to": "a@example.com", "items": [{"name": "x"}], "send_at": "2030-01-02T03:04:05Z"},
    )

    assert typed == Email(
        to="a@example.com",
        items=[Item(name="x")],
        send_at=datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    )


def test_a_dataclass_payload_becomes_the_dataclass() -> None:
    typed = validate_payload(Shape, {"points": [{"x": 1}, {"x": 2, "y": 3}]})

    assert typed == Shape(points=[Point(1, 0), Point(2, 3)])


def test_a_typeddict_payload_becomes_a_checked_dict() -> None:
    payload = {"name": "Ann", "addresses": [{"city": "Oslo"}, {"city": "Rome", "zip": "001"}]}

    typed = validate_payload(Person, payload)

    assert typed == payload
    assert isinstance(typed, dict)


def test_an_instance_of_the_schema_is_checked_like_its_json_form() -> None:
    assert validate_payload(Email, Email(to="a@b")) == Email(to="a@b")
    assert validate_payload(Point, Point(x=1)) == Point(x=1)
    with pytest.raises(PayloadValidationError, match=r"payload\.x: Expected `int`, got `str`"):
        validate_payload(Point, Point(x="1"))  # type: ignore[arg-type]


def test_without_a_schema_any_json_object_passes_unchanged() -> None:
    payload = {"anything": [1, {"nested": None}]}

    assert validate_payload(None, payload) is payload
    assert _error(None, [1, 2]) == ("payload", "Expected `object`, got `array`")
    assert _error(None, "text") == ("payload", "Expected `object`, got `str`")
    assert _error(None, None) == ("payload", "Expected `object`, got `null`")
    assert _error(None, {1: "x"}) == ("payload", "object keys must be strings")


# ---------------------------------------------------------------------------------------------
# Failures name the field path
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "payload", "field", "problem"),
    [
        (Email, {"to": 1}, "payload.to", "Expected `str`, got `int`"),
        (Email, {}, "payload.to", "missing required field"),
        (Email, [], "payload", "Expected `object`, got `array`"),
        (
            Email,
            {"to": "a", "items": [{"name": "a"}, {"name": "b"}, {"name": 3}]},
            "payload.items[2].name",
            "Expected `str`, got `int`",
        ),
        (
            Email,
            {"to": "a", "items": [{"name": "a"}, {"qty": 2}]},
            "payload.items[1].name",
            "missing required field",
        ),
        (
            Email,
            {"to": "a", "headers": {"h": 1}},
            "payload.headers[...]",
            "Expected `str`, got `int`",
        ),
        (
            Email,
            {"to": "a", "send_at": "soon"},
            "payload.send_at",
            "Invalid RFC3339 encoded datetime",
        ),
        (Shape, {"points": [{"x": 1}, {"y": 2}]}, "payload.points[1].x", "missing required field"),
        (Shape, {"points": [], "label": "forbidden"}, "payload", "label may not be 'forbidden'"),
        (
            Person,
            {"name": "A", "addresses": [{}]},
            "payload.addresses[0].city",
            "missing required field",
        ),
        (Person, {"addresses": []}, "payload.name", "missing required field"),
        (Limits, {"count": 0}, "payload.count", "Expected `int` >= 1"),
        (Limits, {"count": 11}, "payload.count", "Expected `int` <= 10"),
        (
            Drawing,
            {"shapes": [{"type": "blob"}]},
            "payload.shapes[0].type",
            "Invalid value: not one of the allowed values",
        ),
    ],
)
def test_an_invalid_payload_names_the_field_path(
    schema: Any, payload: Any, field: str, problem: str
) -> None:
    assert _error(schema, payload) == (field, problem)


def test_types_are_not_coerced_from_strings() -> None:
    # JSON has real numbers and booleans: "5" is a mistake, not an int.
    assert _error(Point, {"x": "5"}) == ("payload.x", "Expected `int`, got `str`")
    assert _error(Point, {"x": True}) == ("payload.x", "Expected `int`, got `bool`")
    # ...while the string forms JSON needs for datetimes and UUIDs are read.
    typed = validate_payload(Limits, {"count": 1, "ident": "12345678-1234-5678-1234-567812345678"})
    assert typed.ident == uuid.UUID("12345678-1234-5678-1234-567812345678")


@pytest.mark.parametrize(
    "payload",
    [{"count": 1, "mode": "top-secret-value"}, {"count": 1, "color": "top-secret-value"}],
)
def test_a_rejected_value_is_not_repeated_in_the_error(payload: dict[str, Any]) -> None:
    field, problem = _error(Limits, payload)

    assert field in ("payload.mode", "payload.color")
    assert problem == "Invalid value: not one of the allowed values"
    assert "top-secret-value" not in f"{field}: {problem}"


# ---------------------------------------------------------------------------------------------
# Unknown fields: rejected by default, at any depth, for every kind of schema
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "payload", "field", "allowed"),
    [
        (Email, {"to": "a", "tooo": "b"}, "payload.tooo", "headers, items, send_at, subject, to"),
        (
            Email,
            {"to": "a", "items": [{"name": "a", "qtty": 2}]},
            "payload.items[0].qtty",
            "name, qty",
        ),
        (Shape, {"points": [{"x": 1, "z": 2}]}, "payload.points[0].z", "x, y"),
        (Person, {"name": "A", "addresses": [], "age": 3}, "payload.age", "addresses, name"),
        (
            Person,
            {"name": "A", "addresses": [{"city": "B", "country": "C"}]},
            "payload.addresses[0].country",
            "city, zip",
        ),
        (
            Drawing,
            {"shapes": [{"type": "square", "side": 1, "radius": 2}]},
            "payload.shapes[0].radius",
            "side",
        ),
        (
            Email,
            {"to": "a", "odd key": 1},
            'payload["odd key"]',
            "headers, items, send_at, subject, to",
        ),
    ],
)
def test_an_unknown_field_is_rejected_with_its_path_and_the_allowed_fields(
    schema: Any, payload: Any, field: str, allowed: str
) -> None:
    assert _error(schema, payload) == (field, f"unknown field; allowed fields: {allowed}")


def test_unknown_fields_can_be_ignored_instead() -> None:
    typed = validate_payload(
        Email,
        {"to": "a", "extra": 1, "items": [{"name": "x", "more": 2}]},
        forbid_unknown_fields=False,
    )
    assert typed == Email(to="a", items=[Item(name="x")])
    assert validate_payload(Address, {"city": "x", "extra": 1}, forbid_unknown_fields=False) == {
        "city": "x"
    }


def test_a_struct_that_forbids_unknown_fields_always_does() -> None:
    assert _error(StrictEmail, {"to": "a", "cc": "b"}, forbid_unknown_fields=False) == (
        "payload.cc",
        "unknown field",
    )


def test_the_tag_field_of_a_tagged_struct_is_not_unknown() -> None:
    typed = validate_payload(Drawing, {"shapes": [{"type": "circle", "radius": 1.5}]})

    assert typed == Drawing(shapes=[Circle(radius=1.5)])


class Catalog(msgspec.Struct):
    items: dict[str, Item]


def test_dict_values_are_checked_with_their_key_in_the_path() -> None:
    assert _error(Catalog, {"items": {"pen": {"name": "p", "colour": "b"}}}) == (
        "payload.items.pen.colour",
        "unknown field; allowed fields: name, qty",
    )


# ---------------------------------------------------------------------------------------------
# to_builtins, schema_json, check_schema
# ---------------------------------------------------------------------------------------------


def test_to_builtins_turns_typed_payloads_back_into_json_data() -> None:
    payload = {
        "to": "a",
        "subject": "",
        "items": [{"name": "x", "qty": 2}],
        "send_at": "2030-01-02T03:04:05Z",
        "headers": {"k": "v"},
    }

    assert to_builtins(validate_payload(Email, payload)) == payload
    assert to_builtins(Shape(points=[Point(1)])) == {"points": [{"x": 1, "y": 0}], "label": None}
    assert msgspec.json.decode(msgspec.json.encode(to_builtins(Limits(count=2)))) == {
        "count": 2,
        "mode": "fast",
        "color": "red",
        "ident": None,
    }


def test_schema_json_describes_each_kind_of_schema() -> None:
    assert schema_json(None) is None
    email = schema_json(Email)
    assert email is not None
    assert email["$ref"] == "#/$defs/Email"
    assert email["$defs"]["Email"]["required"] == ["to"]
    assert email["$defs"]["Item"]["properties"]["qty"] == {"type": "integer", "default": 1}
    person = schema_json(Person)
    assert person is not None
    assert set(person["$defs"]) == {"Person", "Address"}
    point = schema_json(Point)
    assert point is not None
    assert point["$defs"]["Point"]["required"] == ["x"]


@pytest.mark.parametrize("schema", [None, Email, Point, Person, Limits, Drawing])
def test_check_schema_accepts_the_three_kinds(schema: Any) -> None:
    check_schema(schema)


class Opaque:
    pass


class HoldsOpaque(msgspec.Struct):
    thing: Opaque


class Dangling(msgspec.Struct):
    thing: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821


@pytest.mark.parametrize(
    ("schema", "match"),
    [
        (int, "must be a msgspec Struct, a dataclass or a TypedDict"),
        (dict[str, int], "must be a msgspec Struct, a dataclass or a TypedDict"),
        (Opaque, "must be a msgspec Struct, a dataclass or a TypedDict"),
        (Point(1), "must be a msgspec Struct, a dataclass or a TypedDict"),
        (HoldsOpaque, "is not usable: TypeError"),
        (Dangling, "is not usable: NameError"),
    ],
)
def test_check_schema_rejects_other_types(schema: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        check_schema(schema)
