"""The rows of CONTRACT.md section 1 as typed objects, and every rule they must obey.

Validation happens once, here, at the edge: a row either becomes a `Request`, `LogRow` or `Selection`
whose fields can be trusted, or a `BadRowError` that names the file, the line and the rule it broke.
Rules that span rows (feature lengths fixed across a data set, unique request ids within a file) live
in `DatasetShape`, which sees every row of a data set in turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import pydantic
import pydantic_core
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from genco.errors import BadRowError, ItemLocation, Location
from genco.options import bounded, check_options

Kind = Literal["requests", "logs", "selections", "decisions", "clicks"]
KINDS: tuple[Kind, ...] = ("requests", "logs", "selections")  # what `genco validate` reads; the others `genco join` reads

#: Default cap on candidates per component. Real catalogs have 1 to 100+; the cap only exists so that a
#: broken upstream (a whole catalog pasted into one row) fails loudly instead of exhausting memory.
DEFAULT_MAX_CANDIDATES = 4096


@dataclass(frozen=True)
class Limits:
    """How much one row, and one HTTP call, may hold: the same limits for `genco validate/train/select` and
    `genco serve`, each checked before the work it bounds (a row's candidates before its elements are
    validated, a body's size before it is read, its request count before any request is validated)."""

    max_candidates: int = bounded(DEFAULT_MAX_CANDIDATES, ge=1, le=1 << 20)  # per component of a row
    max_requests: int = bounded(10_000, ge=1, le=1 << 20)  # request rows per HTTP call
    max_body_bytes: int = bounded(64 << 20, ge=1 << 10, le=1 << 34)  # HTTP request body

    def __post_init__(self) -> None:
        check_options(self)

# Every rule a row can break, with the words a user sees in an error message.
RULES: dict[str, str] = {
    "invalid-json": "the line (or the HTTP body) is not valid JSON",
    "not-an-object": "a row must be a JSON object",
    "missing-field": "a required field is missing",
    "wrong-type": "a field has the wrong type",
    "non-finite-number": "features and scores must be finite numbers (no NaN or infinity)",
    "feature-range": "feature values must lie within +-1e12 (genco computes in float32)",
    "no-components": "a row needs at least one component",
    "empty-candidates": "a component needs at least one candidate",
    "too-many-candidates": "a component has more candidates than the configured limit",
    "duplicate-element-id": "element ids must be unique within their component in a row",
    "duplicate-component": "a component name appears twice in a row",
    "shown-components": "`shown` must name one element for every component of the row, and no others",
    "shown-not-candidate": "a `shown` id must be one of that component's candidates",
    "click-not-binary": "click must be the integer 0 or 1",
    "propensity-range": "propensity must be a number in (0, 1]",
    "revenue-negative": "revenue must be a number >= 0",
    "feature-length": "feature vectors must have the same length in every row of a data set",
    "duplicate-request-id": "request_id must be unique within a file (or one HTTP call)",
    "unknown-component": "a request has a component the model was not trained on",
    "unknown-request": "a selection names a request_id that is not among the requests",
    "selection-components": "a selection must pick one element for every component of its request, and no others",
    "selection-not-candidate": "a selected id must be one of that component's candidates",
    # the HTTP body of POST /v1/select
    "too-many-requests": "an HTTP call holds more request rows than the configured limit",
    "body-too-large": "an HTTP body is larger than the configured limit",
    "unsupported-media-type": "an HTTP body must be sent as Content-Type: application/json",
}


def _custom(rule: str, message: str) -> PydanticCustomError:
    """A rule broken inside validation; `message` is final text (no template: ids may hold braces)."""
    assert rule in RULES, rule
    return PydanticCustomError(rule, message, None)


def shown_value(value: Any, limit: int = 60) -> str:
    """A value as an error message shows it: its repr, cut short (a 50 MB field is never echoed back)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} characters)"


def _check_click(value: int) -> int:
    if value not in (0, 1):
        raise _custom("click-not-binary", f"click must be 0 or 1, got {shown_value(value)}")
    return value


def _check_propensity(value: float | None) -> float | None:
    if value is not None and not 0.0 < value <= 1.0:
        raise _custom("propensity-range", f"propensity must be in (0, 1], got {shown_value(value)}")
    return value


def _check_revenue(value: float | None) -> float | None:
    if value is not None and value < 0:
        raise _custom("revenue-negative", f"revenue must be >= 0, got {shown_value(value)}")
    return value


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
#: The largest feature magnitude a row may hold. Models compute in float32, where products of two values past
#: about 1e19 overflow to infinity and turn scores and propensities into NaN; 1e12 leaves room for millisecond
#: timestamps and prices in cents while keeping every product finite.
MAX_FEATURE_ABS = 1e12
Features = list[Annotated[float, Field(allow_inf_nan=False, ge=-MAX_FEATURE_ABS, le=MAX_FEATURE_ABS)]]


class _Row(BaseModel):
    # strict: "0.5" is not a number and true is not a click; extra fields are allowed (the contract may grow).
    model_config = ConfigDict(strict=True, extra="ignore")


class Element(_Row):
    """One candidate creative element of a component (a title, an image, a highlight, ...)."""

    id: str
    features: Features = Field(default_factory=list)


class Request(_Row):
    """What the ad server knows at decision time: context and the candidates of every component."""

    request_id: str
    ad_id: str
    user: Features
    ad: Features | None = None
    components: dict[str, list[Element]]

    @field_validator("components", mode="before")
    @classmethod
    def _not_too_many(cls, components: Any, info: ValidationInfo) -> Any:
        """The candidate limit, checked on the raw lists before 5,000 elements are validated one by one."""
        limit = (info.context or {}).get("max_candidates", DEFAULT_MAX_CANDIDATES)
        if isinstance(components, dict):
            for name, candidates in components.items():
                if isinstance(candidates, list) and len(candidates) > limit:
                    raise _custom("too-many-candidates", f"component {shown_value(name)} has {len(candidates)} candidates, "
                                                         f"the limit is {limit} (raise it with --max-candidates)")
        return components

    @model_validator(mode="after")
    def _candidates_are_sound(self) -> "Request":
        if not self.components:
            raise _custom("no-components", "components is empty")
        for name, candidates in self.components.items():
            if not candidates:
                raise _custom("empty-candidates", f"component {shown_value(name)} has no candidates")
            ids = [element.id for element in candidates]
            if len(set(ids)) == len(ids):
                continue
            seen: set[str] = set()
            for element_id in ids:  # the first repeated id, named
                if element_id in seen:
                    raise _custom("duplicate-element-id", f"component {shown_value(name)} lists element {shown_value(element_id)} twice")
                seen.add(element_id)
        return self

    def candidate_ids(self, component: str) -> list[str]:
        return [element.id for element in self.components[component]]


class LogRow(Request):
    """A served impression: the request, the combination shown, and whether it was clicked."""

    shown: dict[str, str]
    click: Annotated[int, AfterValidator(_check_click)]
    propensity: Annotated[float | None, AfterValidator(_check_propensity)] = None
    revenue: Annotated[FiniteFloat | None, AfterValidator(_check_revenue)] = None

    @model_validator(mode="after")
    def _shown_is_a_combination(self) -> "LogRow":
        check_combination(self, self.shown, "shown")
        return self


class Decision(Request):
    """A decision `genco serve --log-decisions` recorded: the request, what was shown with its propensity, which
    model answered and when (UTC, ISO 8601). A log row but for the click, which `genco join` adds."""

    shown: dict[str, str]
    propensity: Annotated[float, AfterValidator(_check_propensity)]
    model_version: str
    served_at: str
    score: FiniteFloat | None = None

    @model_validator(mode="after")
    def _shown_is_a_combination(self) -> "Decision":
        check_combination(self, self.shown, "shown")
        return self


class ClickEvent(_Row):
    """A click on a served ad, as the ad server's click tracker reports it: the request_id of the decision, and
    optionally what the click earned. A request clicked twice is one click."""

    request_id: str
    revenue: Annotated[FiniteFloat | None, AfterValidator(_check_revenue)] = None


class Selection(_Row):
    """genco's answer for one request: one element id per component, its score and propensity."""

    request_id: str
    selection: dict[str, str]
    score: FiniteFloat | None = None
    propensity: Annotated[float | None, AfterValidator(_check_propensity)] = None


def combination_problem(
    candidates: dict[str, list[str]], combination: dict[str, str], field: Literal["shown", "selection"]
) -> tuple[str, str] | None:
    """Why `combination` is not one candidate id per component of `candidates`, as (rule, detail); None if it is."""
    if set(combination) != set(candidates):
        missing = sorted(set(candidates) - set(combination))
        extra = sorted(set(combination) - set(candidates))
        return f"{field}-components", (f"{field} misses components {shown_value(missing)} / names components "
                                        f"the row lacks {shown_value(extra)}")
    for name, chosen in combination.items():
        if chosen not in candidates[name]:
            return f"{field}-not-candidate", (f"{field}[{shown_value(name)}] = {shown_value(chosen)} is not among the "
                                              f"candidates of {shown_value(name)}")
    return None


def check_combination(request: Request, combination: dict[str, str], field: Literal["shown", "selection"]) -> None:
    problem = combination_problem({n: request.candidate_ids(n) for n in request.components}, combination, field)
    if problem:
        raise _custom(problem[0], problem[1])


MODELS: dict[Kind, type[_Row]] = {"requests": Request, "logs": LogRow, "selections": Selection, "decisions": Decision,
                                   "clicks": ClickEvent}


def _path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def rule_of(error: dict[str, Any]) -> tuple[str, str]:
    """Map one pydantic error to (rule name, human detail)."""
    kind, loc, msg = error["type"], tuple(error["loc"]), error["msg"]
    where = _path(loc)
    got = shown_value(error.get("input"))
    if kind in RULES:
        return kind, msg
    if kind == "json_invalid":
        return "invalid-json", msg
    if kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
        return "not-an-object", f"expected a JSON object, got {type(error.get('input')).__name__}"
    if kind == "missing":
        return "missing-field", f"{where}: field required"
    if loc and loc[0] == "click":
        return "click-not-binary", f"click must be 0 or 1, got {got}"
    if loc and loc[0] == "propensity" and kind == "finite_number":
        return "propensity-range", f"propensity must be in (0, 1], got {got}"
    if kind == "finite_number":
        return "non-finite-number", f"{where}: {msg}, got {got}"
    if kind in ("greater_than_equal", "less_than_equal") and loc and loc[0] in ("user", "ad", "components"):
        return "feature-range", f"{where}: {got} is outside +-{MAX_FEATURE_ABS:.0e} (genco computes in float32)"
    return "wrong-type", f"{where}: {msg}, got {got}"


def parse_row(kind: Kind, raw: bytes | str | dict[str, Any], location: Location | ItemLocation,
              max_candidates: int = DEFAULT_MAX_CANDIDATES) -> _Row:
    """Validate one raw row (a JSON line, or a dict from Parquet or an HTTP body) into its typed object, or raise
    BadRowError naming the rule and the field."""
    model = MODELS[kind]
    context = {"max_candidates": max_candidates}
    try:
        if isinstance(raw, dict):
            return model.model_validate(raw, context=context)
        return model.model_validate_json(raw, context=context)
    except pydantic.ValidationError as exc:
        error = exc.errors(include_url=False, include_input=True)[0]
        rule, detail = rule_of(error)
        raise BadRowError(location, rule, detail, error["loc"]) from None
    except RecursionError:  # a dict nested past Python's limit (pydantic's own JSON parser stops earlier)
        raise BadRowError(location, "invalid-json", "nested too deeply") from None


class DatasetShape:
    """Rules that span rows: feature lengths fixed across a data set, request ids unique within a file.

    The first row to show a length sets it; a later row that disagrees is an error naming both places.
    """

    def __init__(self) -> None:
        self.lengths: dict[str, tuple[int, Location]] = {}
        self._request_ids: set[str] = set()
        self._file: str | None = None

    def check(self, row: _Row, location: Location | ItemLocation) -> None:
        """Raise BadRowError if `row` disagrees with the rows seen before it; else remember it."""
        file = getattr(location, "path", None)  # request ids are unique within a file (or one HTTP call)
        if file != self._file:
            self._file, self._request_ids = file, set()
        if row.request_id in self._request_ids:
            raise BadRowError(location, "duplicate-request-id", f"request_id {shown_value(row.request_id)} appears twice",
                              ("request_id",))
        if isinstance(row, Request):
            # Check every length before remembering any, so that a rejected (skipped) row leaves no trace.
            # One list of lengths per key; the message is only built for an error.
            pending: list[tuple[str, str | None, list[int]]] = [("user", None, [len(row.user)])]
            if row.ad is not None:
                pending.append(("ad", None, [len(row.ad)]))
            pending += [(f"component:{name}", name, [len(element.features) for element in candidates])
                        for name, candidates in row.components.items()]
            staged: dict[str, tuple[int, Location | ItemLocation]] = {}
            for key, name, lengths in pending:
                known = self.lengths.get(key) or staged.get(key) or (lengths[0], location)
                if lengths.count(known[0]) != len(lengths):
                    i = next(i for i, n in enumerate(lengths) if n != known[0])
                    what, field = (key, (key,)) if name is None else (
                        f"features of {shown_value(name)} element {shown_value(row.components[name][i].id)}",
                        ("components", name, i, "features"))
                    raise BadRowError(location, "feature-length",
                                      f"{what} has length {lengths[i]}, but {known[0]} was set by {known[1]}", field)
                if key not in self.lengths:
                    staged[key] = known
            self.lengths.update(staged)
        self._request_ids.add(row.request_id)

    def feature_dims(self) -> dict[str, int]:
        """Component name -> element feature length, for the components seen so far."""
        return {key.split(":", 1)[1]: n for key, (n, _) in self.lengths.items() if key.startswith("component:")}


class ModelSchema(Protocol):
    """What a trained model requires of a request (genco.data.FeatureSchema)."""

    def problem(self, row: Request) -> tuple[str, str, tuple] | None: ...


class RowChecker:
    """Every rule a row must pass, in one order, for every way rows arrive (a file, an HTTP body, a Python list):
    its own rules (`parse_row`), the data set's (`DatasetShape`) and, when serving, the model's (`schema`).

    The command line maps the BadRowError it raises to exit status 2, the server to 422: both from here.
    """

    def __init__(self, kind: Kind, limits: Limits | None = None, schema: ModelSchema | None = None,
                 shape: DatasetShape | None = None):
        self.kind, self.limits, self.schema = kind, limits or Limits(), schema
        self.shape = shape if shape is not None else DatasetShape()

    def check(self, raw: bytes | str | dict[str, Any], location: Location | ItemLocation) -> _Row:
        row = parse_row(self.kind, raw, location, self.limits.max_candidates)
        self.shape.check(row, location)
        if self.schema is not None and isinstance(row, Request):
            problem = self.schema.problem(row)
            if problem:
                raise BadRowError(location, *problem)
        return row


class BodyError(Exception):
    """An HTTP body the server cannot take: `status` (413, 415, 422), the field path and the rule."""

    def __init__(self, status: int, loc: tuple, rule: str, message: str):
        assert rule in RULES, rule
        self.status, self.loc, self.rule, self.message = status, loc, rule, message
        super().__init__(f"{'.'.join(map(str, loc))}: rule {rule}: {message}")


def parse_select_body(raw: bytes, limits: Limits, schema: ModelSchema | None = None) -> tuple[list[Request], bool | None]:
    """The body of POST /v1/select -> (request rows, greedy or None when not given); BodyError or BadRowError
    (with an ItemLocation) when it breaks a rule. Rows pass the same RowChecker as a file's rows."""
    try:
        body = pydantic_core.from_json(raw)
    except ValueError as exc:
        raise BodyError(422, ("body",), "invalid-json", str(exc)) from None
    if not isinstance(body, dict):
        raise BodyError(422, ("body",), "not-an-object", f"expected a JSON object, got {type(body).__name__}")
    if "requests" not in body:
        raise BodyError(422, ("body", "requests"), "missing-field", "requests: field required")
    rows, greedy = body["requests"], body.get("greedy")
    if not isinstance(rows, list):
        raise BodyError(422, ("body", "requests"), "wrong-type", f"requests must be a list, got {type(rows).__name__}")
    if len(rows) > limits.max_requests:
        raise BodyError(413, ("body", "requests"), "too-many-requests",
                        f"at most {limits.max_requests} requests per call (--max-requests), got {len(rows)}")
    if greedy is not None and not isinstance(greedy, bool):
        raise BodyError(422, ("body", "greedy"), "wrong-type", f"greedy must be true or false, got {shown_value(greedy)}")
    checker = RowChecker("requests", limits, schema)
    requests = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadRowError(ItemLocation(i), "not-an-object", f"expected a JSON object, got {type(row).__name__}")
        requests.append(checker.check(row, ItemLocation(i)))
    return requests, greedy
