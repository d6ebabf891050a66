"""OpenAI's grader endpoints on a real server, through the official `openai` client: run
and validate parse into the client's types; bad graders get 400 naming the field; python
graders get 403 while off and run while on; a served model judges, another embeds."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.fine_tuning.alpha import GraderRunResponse, GraderValidateResponse
from openai.types.graders import StringCheckGrader

from tests.server import TEST_ENV, Server
from tests.tiny_llm import QWEN, install_in_hf_cache

pytestmark = pytest.mark.slow

EXACT = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_json.city}}",
    "reference": "{{item.city}}",
    "operation": "eq",
}
PYTHON = {
    "type": "python",
    "name": "length",
    "source": "def grade(sample, item):\n    return len(sample['output_text']) / item['n']\n",
}


# No job runs here: the worker's warm job process (which imports the training libraries at
# start) would only compete for the cores.
QUIET = {**TEST_ENV, "TUNEFORGE_WARM_START": "0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, offline_hub: Path) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("server") / "tuneforge-data", env=QUIET)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0)


@pytest.fixture(scope="module")
def python_on(
    tmp_path_factory: pytest.TempPathFactory, offline_hub: Path
) -> Iterator[openai.OpenAI]:
    """A server whose operator has turned python graders on."""
    env = {
        **TEST_ENV,
        "TUNEFORGE_PYTHON_GRADERS": "1",
        "TUNEFORGE_PYTHON_GRADER_SECONDS": "5",
        "TUNEFORGE_PYTHON_GRADER_CPU_SECONDS": "1",
    }
    srv = Server(tmp_path_factory.mktemp("python-on") / "tuneforge-data", env=env)
    yield openai.OpenAI(base_url=srv.url + "/v1", api_key="any", max_retries=0)
    srv.stop()


def run(client: openai.OpenAI, grader: dict[str, Any], sample: str, item: Any = None):
    return client.fine_tuning.alpha.graders.run(
        grader=grader, model_sample=sample, **({} if item is None else {"item": item})
    )


def test_run_a_multi_grader(client: openai.OpenAI) -> None:
    grader = {
        "type": "multi",
        "name": "weather call",
        "graders": {
            "exact": EXACT,
            "close": {
                "type": "text_similarity",
                "name": "close",
                "input": "{{sample.output_json.city}}",
                "reference": "{{item.city}}",
                "evaluation_metric": "fuzzy_match",
            },
        },
        "calculate_output": "max(exact, close)",
    }
    response = run(client, grader, '{"city": "kitten"}', {"city": "sitting"})
    assert isinstance(response, GraderRunResponse)
    assert response.reward == pytest.approx(8 / 13)
    assert response.sub_rewards == {"exact": 0.0, "close": pytest.approx(8 / 13)}
    assert response.metadata.name == "weather call" and response.metadata.type == "multi"
    assert response.metadata.errors.formula_parse_error is False
    assert response.metadata.errors.api_model_grader_parse_error is False
    assert response.metadata.execution_time >= 0
    assert response.metadata.token_usage is None
    assert response.api_model_grader_token_usage_per_model == {}
    # The answer's faults are reported in the answer, with reward 0.
    response = run(client, EXACT, "Paris", {"city": "Paris"})
    assert response.reward == 0.0 and response.metadata.errors.sample_parse_error


def test_validate_answers_the_grader_in_the_client_s_types(client: openai.OpenAI) -> None:
    response = client.fine_tuning.alpha.graders.validate(grader=EXACT)
    assert isinstance(response, GraderValidateResponse)
    assert isinstance(response.grader, StringCheckGrader)
    assert response.grader.reference == "{{item.city}}" and response.grader.operation == "eq"
    multi = {"type": "multi", "name": "m", "graders": {"exact": EXACT}, "calculate_output": "exact"}
    response = client.fine_tuning.alpha.graders.validate(grader=multi)
    # The client declares MultiGrader.graders as one grader, so a mapping of them (OpenAI's
    # documented form) makes it pick another class of its union; the fields are all there.
    assert response.grader is not None
    assert response.grader.model_dump() | {"graders": None} == multi | {"graders": None} | {
        "input": None,
        "operation": None,
        "reference": None,
    }
    assert response.grader.graders == {"exact": EXACT}  # type: ignore[union-attr]
    # One grader object, as the client's type has it, is the mapping {its name: it}.
    one = multi | {"graders": EXACT | {"name": "exact"}}
    response = client.fine_tuning.alpha.graders.validate(grader=one)
    assert response.grader.graders == {"exact": EXACT}  # type: ignore[union-attr]


def test_a_bad_grader_gets_400_naming_the_field(client: openai.OpenAI) -> None:
    broken = {k: v for k, v in EXACT.items() if k != "reference"}
    multi = {"type": "multi", "name": "m", "graders": {"a": broken}, "calculate_output": "a"}
    for call in (
        lambda: client.fine_tuning.alpha.graders.validate(grader=multi),
        lambda: run(client, multi, "x", {"city": "Paris"}),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            call()
        assert caught.value.body["param"] == "grader.graders.a.reference"
        assert caught.value.body["code"] == "invalid_request"
    # An item without the field a template names.
    with pytest.raises(openai.BadRequestError) as caught:
        run(client, EXACT, '{"city": "Paris"}', {"town": "Paris"})
    assert caught.value.body["param"] == "grader.reference"
    assert "{{item.city}}" in caught.value.body["message"]
    # A judge that is not here.
    judge = {
        "type": "score_model",
        "name": "j",
        "model": "no/such-model",
        "input": [{"role": "user", "content": "{{sample.output_text}}"}],
    }
    with pytest.raises(openai.NotFoundError) as caught:
        client.fine_tuning.alpha.graders.validate(grader=judge)
    assert caught.value.body["param"] == "grader.model"


def test_python_graders_are_refused_while_off(client: openai.OpenAI) -> None:
    for call in (
        lambda: client.fine_tuning.alpha.graders.validate(grader=PYTHON),
        lambda: run(client, PYTHON, "abcd", {"n": 4}),
    ):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            call()
        assert caught.value.body["code"] == "python_graders_disabled"
        assert "TUNEFORGE_PYTHON_GRADERS=1" in caught.value.body["message"]
        assert caught.value.body["type"] == "permission_error"


def test_python_graders_run_where_turned_on(python_on: openai.OpenAI) -> None:
    response = run(python_on, PYTHON, "abcd", {"n": 8})
    assert response.reward == 0.5 and response.metadata.type == "python"
    looping = {**PYTHON, "source": "def grade(sample, item):\n    while True:\n        pass\n"}
    response = run(python_on, looping, "abcd", {"n": 8})
    assert response.reward == 0.0
    assert response.metadata.errors.python_grader_runtime_error
    assert response.metadata.errors.unresponsive_reward_error


def test_served_models_judge(client: openai.OpenAI, offline_hub: Path) -> None:
    """The tiny random Qwen2 writes neither a score nor a label: the pipeline (prompts,
    generation, token counts per model) runs, and the parse errors are reported; reading
    scores and labels is in test_judge."""
    install_in_hf_cache(offline_hub, QWEN)
    prompt = [{"role": "user", "content": "Rate: {{sample.output_text}}"}]
    judges = {
        "type": "multi",
        "name": "judges",
        "graders": {
            "score": {
                "type": "score_model",
                "name": "score",
                "model": QWEN,
                "input": prompt,
                "sampling_params": {"max_completions_tokens": 8},
            },
            "label": {
                "type": "label_model",
                "name": "label",
                "model": QWEN,
                "input": prompt,
                "labels": ["good", "bad"],
                "passing_labels": ["good"],
                "sampling_params": {"max_completions_tokens": 4},
            },
        },
        "calculate_output": "score + label",
    }
    response = run(client, judges, "Paris is the capital of France.")
    assert response.reward == 0.0 and response.sub_rewards == {"score": 0.0, "label": 0.0}
    assert response.metadata.errors.api_model_grader_parse_error
    usage = response.api_model_grader_token_usage_per_model[QWEN]
    assert 0 < usage["completion_tokens"] <= 8 + 4 and usage["prompt_tokens"] > 20
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert response.metadata.token_usage == usage["total_tokens"]
    assert response.metadata.scores["score"]["result"] is None
    assert isinstance(response.metadata.scores["label"]["output"], str)


def test_cosine_uses_a_served_embedding_model(client: openai.OpenAI) -> None:
    def cosine(answer: str) -> float:
        grader = {
            "type": "text_similarity",
            "name": "cos",
            "input": "{{sample.output_text}}",
            "reference": "A man is playing a guitar.",
            "evaluation_metric": "cosine",
        }
        return run(client, grader, answer).reward

    assert cosine("A man is playing a guitar.") == pytest.approx(1.0, abs=1e-4)
    assert cosine("A person plays the guitar.") > 0.6 > cosine("The stock market fell today.")


def test_the_cli_runs_and_validates(server: Server, tmp_path: Path) -> None:
    grader = tmp_path / "grader.yaml"
    grader.write_text(
        "type: multi\nname: weather call\ngraders:\n"
        "  exact:\n    type: string_check\n    name: exact\n    operation: eq\n"
        "    input: '{{sample.output_json.city}}'\n    reference: '{{item.city}}'\n"
        "calculate_output: exact\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"TUNEFORGE_URL": server.url}

    def tuneforge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tuneforge.cli", "graders", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = tuneforge(
        "run", str(grader), "--sample", '{"city": "Paris"}', "--item", '{"city": "Paris"}'
    )
    assert done.returncode == 0, done.stderr
    assert "reward 1.0000 (weather call, multi)" in done.stdout and "exact" in done.stdout
    done = tuneforge("run", str(grader), "--sample", "Paris", "--item", '{"city": "Paris"}')
    assert "reward 0.0000" in done.stdout and "sample_parse_error" in done.stdout
    assert tuneforge("validate", str(grader)).stdout.strip() == ("weather call: valid multi grader")
    grader.write_text(grader.read_text().replace("calculate_output: exact", "calculate_output: x"))
    done = tuneforge("validate", str(grader))
    assert done.returncode == 1 and "grader.calculate_output" in done.stderr
