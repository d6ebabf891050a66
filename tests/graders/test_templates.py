"""Template strings: references into the item and the sample, and errors that name them."""

from __future__ import annotations

import pytest

from tuneforge.graders.templates import (
    MissingReference,
    Sample,
    SampleReferenceError,
    TemplateSyntaxError,
    references,
    render,
)

ITEM = {"answer": "Paris", "meta": {"lang": "fr", "tags": ["a", "b"]}, "n": 3, "ok": True}


def test_item_and_sample_values_are_put_in() -> None:
    sample = Sample('{"city": "Paris", "facts": [1, {"x": "deep"}]}')
    text = render(
        "{{item.answer}}|{{ item.meta.lang }}|{{item.meta.tags[1]}}|{{item.n}}|{{item.ok}}"
        "|{{item.meta}}|{{sample.output_json.city}}|{{sample.output_json.facts[1].x}}",
        sample,
        ITEM,
        "grader.input",
    )
    assert text == 'Paris|fr|b|3|true|{"lang": "fr", "tags": ["a", "b"]}|Paris|deep'
    assert render("<{{sample.output_text}}>", Sample("hi"), {}, "p") == "<hi>"
    assert render("no placeholders", None, {}, "p") == "no placeholders"


def test_a_missing_item_field_is_named_with_what_the_item_has() -> None:
    with pytest.raises(MissingReference) as caught:
        render("{{item.reference}}", Sample("x"), ITEM, "grader.graders.a.reference")
    error = caught.value
    assert error.param == "grader.graders.a.reference"
    assert "{{item.reference}}" in error.message
    assert "no field 'reference'" in error.message and "answer, meta, n, ok" in error.message
    with pytest.raises(MissingReference, match=r"item.meta.tags has 2 entries, no \[5\]"):
        render("{{item.meta.tags[5]}}", None, ITEM, "p")
    with pytest.raises(MissingReference, match="item.answer is str where .x needs an object"):
        render("{{item.answer.x}}", None, ITEM, "p")


def test_what_the_answer_lacks_is_the_sample_s_fault() -> None:
    with pytest.raises(SampleReferenceError) as caught:
        render("{{sample.output_json.city}}", Sample("not json"), {}, "p")
    assert caught.value.parse_error
    with pytest.raises(SampleReferenceError) as caught:
        render("{{sample.output_json.city}}", Sample('{"town": 1}'), {}, "p")
    assert not caught.value.parse_error
    assert "no field 'city'" in str(caught.value)


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{{foo.bar}}", "namespaces: item, sample"),
        ("{{ }}", "not a reference"),
        ("{{item}}", "names the whole item"),
        ("{{sample.output}}", "the sample has output_text, output_json, output_tools"),
        ("{{sample.output_text.x}}", "use sample.output_json"),
        ("{{item.a b}}", "steps only"),
    ],
)
def test_placeholders_that_are_no_references(template: str, says: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=says) as caught:
        references(f"x {template} y", "grader.input")
    assert caught.value.param == "grader.input"


def test_references_are_listed() -> None:
    found = references("{{item.a.b[0]}} and {{sample.output_text}}", "p")
    assert [(r.namespace, r.steps) for r in found] == [
        ("item", ("a", "b", 0)),
        ("sample", ("output_text",)),
    ]
