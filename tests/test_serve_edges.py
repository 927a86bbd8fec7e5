"""The HTTP service against bad bodies (issue 12, cases 1-5 and 10): a 4xx naming the field and the rule, never
a 5xx, never the input echoed back, and the server keeps answering. Every test drives the real `genco serve`."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import read_jsonl
from tests.test_bad_input import json_values, mutated


@pytest.fixture(scope="module")
def requests(tiny_world):
    return read_jsonl(tiny_world / "requests.jsonl")


def _detail(response) -> dict:
    body = response.json()
    assert set(body) == {"detail"} and len(body["detail"]) == 1, body
    return body["detail"][0]


def _raw_body(request: dict, replace: str, by: str) -> bytes:
    """A body whose JSON text has `replace` swapped for `by` (NaN and 1e999 cannot be written by json.dumps)."""
    text = json.dumps({"requests": [request]})
    assert replace in text
    return text.replace(replace, by, 1).encode()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("field", ["user", "features"])
def test_non_finite_numbers_are_422_naming_the_field(server, requests, literal, field):
    request = copy.deepcopy(requests[0])
    if field == "user":
        request["user"][1] = 12345.5
        want = ["body", "requests", 0, "user", 1]
    else:
        name = next(iter(request["components"]))
        request["components"][name][0]["features"][0] = 12345.5
        want = ["body", "requests", 0, "components", name, 0, "features", 0]
    response = server.post("/v1/select", _raw_body(request, "12345.5", literal))
    assert response.status_code == 422, response.text
    detail = _detail(response)
    assert detail["type"] == "non-finite-number" and detail["loc"] == want


@pytest.mark.parametrize("greedy", [True, False])
def test_features_past_float32_range_are_422_not_a_nan_answer(server, requests, greedy):
    request = copy.deepcopy(requests[0])
    request["user"][0] = 3.4028235677973366e38  # finite, but its products overflow float32
    response = server.post("/v1/select", json.dumps({"requests": [request], "greedy": greedy}).encode())
    assert response.status_code == 422, response.text
    detail = _detail(response)
    assert detail["type"] == "feature-range" and detail["loc"] == ["body", "requests", 0, "user", 0]


def test_no_requests_is_an_empty_answer(server):
    response = server.select([])
    assert response.status_code == 200, response.text
    assert response.json()["selections"] == [] and response.json()["model_version"]


def test_bodies_past_the_size_limit_are_413_before_reading(server, requests):
    big = json.dumps({"requests": requests * 20}).encode()  # about 3 MB; the server allows 2 MB
    assert len(big) > 2_000_000
    response = server.post("/v1/select", big)
    assert response.status_code == 413 and _detail(response)["type"] == "body-too-large"

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    response = server.client.post("/v1/select", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and _detail(response)["type"] == "body-too-large"


def test_errors_never_echo_the_input(server, requests):
    request = dict(requests[0], user="x" * 1_500_000)  # a 1.5 MB wrong-type field, within the size limit
    response = server.select([request])
    assert response.status_code == 422
    assert len(response.content) < 2000, "the error names the field; it does not send 1.5 MB back"
    detail = _detail(response)
    assert detail["loc"] == ["body", "requests", 0, "user"] and detail["type"] == "wrong-type"


def test_request_count_is_checked_before_any_request(server):
    response = server.select([{"not": "a request"}] * 301)  # the limit is 300: 413, not 422 on row 0
    assert response.status_code == 413, response.text
    assert _detail(response)["type"] == "too-many-requests"


def test_candidate_limit_is_the_command_lines(server, requests, tmp_path):
    request = copy.deepcopy(requests[0])
    name = next(iter(request["components"]))
    template = request["components"][name][0]
    request["components"][name] = [dict(template, id=f"x{i}") for i in range(51)]  # the server allows 50
    response = server.select([request])
    assert response.status_code == 422
    detail = _detail(response)
    assert detail["type"] == "too-many-candidates" and detail["loc"] == ["body", "requests", 0, "components"]
    path = tmp_path / "wide.jsonl"
    path.write_text(json.dumps(request) + "\n")
    from tests.conftest import run_genco

    result = run_genco("validate", path, "--max-candidates", "50")
    assert result.returncode == 2 and "rule too-many-candidates" in result.stderr


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_415(server, requests, content_type):
    response = server.post("/v1/select", json.dumps({"requests": requests[:1]}).encode(), content_type=content_type)
    assert response.status_code == 415 and _detail(response)["type"] == "unsupported-media-type"


def test_json_with_a_charset_is_json(server, requests):
    response = server.post("/v1/select", json.dumps({"requests": requests[:1]}).encode(), "application/json; charset=utf-8")
    assert response.status_code == 200


@pytest.mark.parametrize("value", ["yes", 1, 0, None, [True]])
def test_greedy_is_a_strict_boolean(server, requests, value):
    response = server.select(requests[:1], greedy=value)
    if value is None:  # JSON null: not given, the default (greedy)
        assert response.status_code == 200
        return
    assert response.status_code == 422
    assert _detail(response) | {"msg": ""} == {"loc": ["body", "greedy"], "type": "wrong-type", "msg": ""}


def test_duplicate_request_ids_are_the_command_lines_rule(server, requests):
    response = server.select([requests[0], requests[1] | {"request_id": requests[0]["request_id"]}])
    assert response.status_code == 422
    assert _detail(response) | {"msg": ""} == {"loc": ["body", "requests", 1, "request_id"], "type": "duplicate-request-id",
                                               "msg": ""}


def test_messages_name_the_component_and_element(server, requests):
    request = copy.deepcopy(requests[0])
    name = next(iter(request["components"]))
    first = request["components"][name][0]
    request["components"][name] = [first, dict(first)]
    detail = _detail(server.select([request]))
    assert detail["type"] == "duplicate-element-id"
    assert f"component {name!r} lists element {first['id']!r} twice" in detail["msg"]
    request["components"][name] = []
    detail = _detail(server.select([request]))
    assert detail["type"] == "empty-candidates" and f"component {name!r} has no candidates" in detail["msg"]


def test_invalid_json_and_wrong_shapes(server):
    cases = [(b"{not json", "invalid-json", ["body"]), (b"[1, 2]", "not-an-object", ["body"]),
             (b"{}", "missing-field", ["body", "requests"]), (b'{"requests": 3}', "wrong-type", ["body", "requests"]),
             (b'{"requests": [3]}', "not-an-object", ["body", "requests", 0]), (b"[" * 100_000, "invalid-json", ["body"])]
    for body, rule, loc in cases:
        response = server.post("/v1/select", body)
        assert response.status_code == 422, (body[:20], response.text)
        assert _detail(response)["type"] == rule and _detail(response)["loc"] == loc


# -- property-based: whatever the body, never a 5xx, and the server keeps answering ----------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), replacement=json_values)
def test_random_mutations_of_valid_bodies_never_5xx(server, requests, data, replacement):
    body = mutated(data, {"requests": requests[:2], "greedy": data.draw(st.booleans())}, replacement)
    response = server.post("/v1/select", json.dumps(body).encode())  # NaN and Infinity written as such
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert len(response.json()["selections"]) == len(body["requests"])
    else:
        detail = _detail(response)
        assert detail["loc"][0] == "body" and detail["type"] and detail["msg"]


def test_the_server_still_answers_after_the_bad_bodies(server, requests):
    response = server.select(requests[:3])
    assert response.status_code == 200 and len(response.json()["selections"]) == 3
    metrics = server.client.get("/metrics").text
    assert 'genco_select_calls_total{outcome="bad_request"}' in metrics
    assert 'genco_select_calls_total{outcome="too_large"}' in metrics


def test_the_schema_documents_the_body(server):
    schema = server.client.get("/openapi.json").json()
    body = schema["paths"]["/v1/select"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SelectBody"}
    assert {"SelectBody", "Request", "Element", "SelectAnswer"} <= set(schema["components"]["schemas"])
