"""The verdicts of the generation checks on given answers: JSON, expected keys, language."""

from __future__ import annotations

from tuneforge.training.generation_checks import judge, parse_json

GERMAN = [{"role": "user", "content": "Schreibe einen kurzen Beitrag über unser neues Produkt."}]
ENGLISH = [{"role": "user", "content": "Write a short post about our new product for LinkedIn."}]


def test_json_answers_are_objects_or_arrays_with_a_fence_allowed() -> None:
    assert parse_json('{"post": "Hallo"}') == {"post": "Hallo"}
    assert parse_json('```json\n["#ki", "#news"]\n```') == ["#ki", "#news"]
    assert parse_json("42") is None and parse_json("Hallo Welt") is None
    assert parse_json('{"post": "Hallo"') is None


def test_expected_keys_come_from_the_spec_or_the_reference_answer() -> None:
    answer = '{"post": "Unser neues Produkt ist da, und es ist wirklich großartig."}'
    reference = '{"post": "…", "hashtags": ["#neu"]}'
    assert judge(GERMAN, answer, reference, None)["expected_keys"] is False
    assert judge(GERMAN, answer, reference, ["post"])["expected_keys"] is True
    # A reference in prose names no keys: the check does not apply.
    assert judge(GERMAN, answer, "Ein Beitrag.", None)["expected_keys"] is None


def test_the_answer_must_be_in_the_language_of_the_prompt() -> None:
    german = "Unser neues Produkt ist endlich da und wir freuen uns sehr darüber."
    english = "Our new product is finally here and we are very happy about it."
    assert judge(GERMAN, german, "", None)["language_match"] is True
    assert judge(GERMAN, english, "", None)["language_match"] is False
    assert judge(ENGLISH, english, "", None)["language_match"] is True
    # A JSON answer is judged by its words, not its keys and punctuation.
    assert (
        judge(GERMAN, f'{{"post": "{german}", "hashtags": ["#neu"]}}', "", None)["language_match"]
        is True
    )
    # Too short to tell: not counted either way.
    assert judge(GERMAN, '{"ok": true}', "", None)["language_match"] is None
