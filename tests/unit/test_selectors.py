"""Label and field selectors: parsing, canonical form, matching, and garbage."""

from __future__ import annotations

from typing import Any

import pytest

from podnet.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    label_key_errors,
    label_value_errors,
)

LABELS = {"app": "web", "tier": "front", "env": "prod", "n": "7"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("app!=web", False),
        ("missing!=x", True),  # != matches objects without the label
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("env in (prod,staging)", True),
        ("env in (staging)", False),
        ("env notin (staging, dev)", True),
        ("env notin (prod)", False),
        ("missing notin (a)", True),
        ("missing in (a)", False),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("app=web, env in (prod, dev), !missing, tier", True),
        ("n>5", True),
        ("n<5", False),
        ("app>5", False),  # non-numeric label never satisfies Gt
        ("example.com/role=x", False),
        ("app=", False),  # value must be empty
    ],
)
def test_label_selector_matches(text: str, expected: bool) -> None:
    assert LabelSelector.parse(text).matches(LABELS) is expected


def test_commas_inside_parentheses_belong_to_the_set() -> None:
    sel = LabelSelector.parse("env in (a,prod,b),app=web")
    assert len(sel.requirements) == 2
    assert sel.requirements[0].values == ("a", "b", "prod")
    assert sel.matches(LABELS)


def test_empty_value_equality_matches_empty_label() -> None:
    assert LabelSelector.parse("app=").matches({"app": ""})
    assert LabelSelector.parse("app in (a,)").matches({"app": ""})


def test_canonical_string_is_sorted_and_reparses() -> None:
    sel = LabelSelector.parse("tier  in (b,a) , app==web,!gone,env")
    assert str(sel) == "app==web,env,!gone,tier in (a,b)"
    assert LabelSelector.parse(str(sel)) == sel


def test_empty_selector_matches_everything_including_none() -> None:
    sel = LabelSelector.parse("")
    assert sel.empty
    assert sel.matches(None)
    assert sel.matches({})
    assert not LabelSelector.parse("a").empty
    assert not LabelSelector.parse("a").matches(None)


@pytest.mark.parametrize(
    "text",
    [
        "a b", "a in (b", "a in b", "=a", "a,", ",a", "a=b=c", "!", "!=a", "a=(b)", "a!b",
        "a in (b c)", "bad key=x", "a=bad value", "-a=b", "a=-b", "a" * 64 + "=b",
        "a=" + "b" * 64, "a>b", "a>", "UPPER/x=y", "/x=y", "a/=b", "a in ((b))", "()",
        "a notin", "a,,b", "a=b)", "a!=(", "a=b,", "a in ()x",
    ],
)
def test_label_selector_garbage_raises_selector_error(text: str) -> None:
    with pytest.raises(SelectorError):
        LabelSelector.parse(text)


@pytest.mark.parametrize("text", [None, 5, ["a=b"], {"a": "b"}])
def test_label_selector_non_string_raises_selector_error(text: Any) -> None:
    with pytest.raises(SelectorError):
        LabelSelector.parse(text)


def test_parse_error_message_names_what_was_found() -> None:
    with pytest.raises(SelectorError, match="found 'b'"):
        LabelSelector.parse("a b")


def test_from_spec_match_labels_and_expressions() -> None:
    sel = LabelSelector.from_spec({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "dev"]},
            {"key": "tier", "operator": "NotIn", "values": ["back"]},
            {"key": "n", "operator": "Exists"},
            {"key": "gone", "operator": "DoesNotExist"},
        ],
    })
    assert sel.matches(LABELS)
    assert not sel.matches({**LABELS, "gone": "1"})
    assert not sel.matches({**LABELS, "app": "db"})
    assert str(sel) == "app=web,env in (dev,prod),!gone,n,tier notin (back)"


def test_from_spec_empty_matches_everything() -> None:
    assert LabelSelector.from_spec({}).empty
    assert LabelSelector.from_spec({"matchLabels": None}).matches({"x": "y"})


@pytest.mark.parametrize(
    "spec",
    [
        "app=web",
        ["app"],
        {"matchLabels": "app=web"},
        {"matchLabels": {"app": 1}},
        {"matchLabels": {"bad key": "x"}},
        {"matchExpressions": {"key": "a"}},
        {"matchExpressions": ["a"]},
        {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]},
        {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
        {"matchExpressions": [{"key": "a", "operator": "In"}]},
        {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]},
        {"matchExpressions": [{"key": 5, "operator": "Exists"}]},
        {"matchExpressions": [{"key": "a", "operator": "In", "values": "b"}]},
        {"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]},
    ],
)
def test_from_spec_garbage_raises_selector_error(spec: Any) -> None:
    with pytest.raises(SelectorError):
        LabelSelector.from_spec(spec)


def test_label_key_and_value_checks() -> None:
    assert label_key_errors("app") == []
    assert label_key_errors("example.com/app") == []
    assert label_key_errors("node-role.kubernetes.io/control-plane") == []
    assert label_key_errors("Example.com/app")  # prefix must be lowercase
    assert label_key_errors("app\n")  # no trailing newline sneaks through `$`
    assert label_key_errors("")
    assert label_key_errors(3)
    assert label_value_errors("") == []
    assert label_value_errors("v1.2_x-Y") == []
    assert label_value_errors("a b")
    assert label_value_errors(True)


POD = {
    "metadata": {"name": "web-1", "namespace": "default"},
    "spec": {"nodeName": "n1", "unused": {"x": 1}},
    "status": {"phase": "Running", "podIP": "10.244.1.5"},
}
POD_FIELDS = ["metadata.name", "metadata.namespace", "spec.nodeName", "status.phase",
              "status.podIP", "spec.unschedulable", "spec.unused"]


@pytest.mark.parametrize(
    ("text", "obj", "expected"),
    [
        ("", POD, True),
        ("metadata.name=web-1", POD, True),
        ("metadata.name==web-1", POD, True),
        ("metadata.name=web-2", POD, False),
        ("spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed", POD, True),
        ("status.phase!=Failed,spec.nodeName=n1", POD, True),  # any order
        ("status.phase!=Running", POD, False),
        ("status.phase!=Failed", {"metadata": {"name": "x"}}, True),  # missing compares as ""
        ("status.phase=", {"metadata": {"name": "x"}}, True),
        ("spec.nodeName=", {"spec": None}, True),
        ("spec.unschedulable=false", {"spec": {}}, True),  # Go zero value of a bool
        ("spec.unschedulable=true", {"spec": {"unschedulable": True}}, True),
        ("spec.unused=x", POD, False),  # maps are not selectable
        ("metadata.name=web-1", "garbage", False),
    ],
)
def test_field_selector_matches(text: str, obj: Any, expected: bool) -> None:
    assert FieldSelector.parse(text, POD_FIELDS).matches(obj) is expected


def test_field_selector_unknown_path_uses_kubernetes_wording() -> None:
    with pytest.raises(SelectorError) as exc:
        FieldSelector.parse("metadata.name=a,spec.foo=b", POD_FIELDS)
    assert str(exc.value) == "field label not supported: spec.foo"


def test_field_selector_escapes_and_value_for() -> None:
    sel = FieldSelector.parse(r"metadata.name=a\,b,spec.nodeName!=n1", POD_FIELDS)
    assert sel.value_for("metadata.name") == "a,b"
    assert sel.value_for("spec.nodeName") is None
    assert str(sel) == r"metadata.name=a\,b,spec.nodeName!=n1"
    assert sel.matches({"metadata": {"name": "a,b"}, "spec": {"nodeName": "n2"}})


@pytest.mark.parametrize(
    "text", ["metadata.name", "=x", "metadata.name=a=b", "nope=1", r"metadata.name=a\q", 7]
)
def test_field_selector_garbage_raises_selector_error(text: Any) -> None:
    with pytest.raises(SelectorError):
        FieldSelector.parse(text, POD_FIELDS)
