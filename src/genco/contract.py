"""The rows of CONTRACT.md section 1 as typed objects, and every rule they must obey.

Validation happens once, here, at the edge: a row either becomes a `Request`, `LogRow` or `Selection`
whose fields can be trusted, or a `BadRowError` that names the file, the line and the rule it broke.
Rules that span rows (feature lengths fixed across a data set, unique request ids within a file) live
in `DatasetShape`, which sees every row of a data set in turn.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from genco.errors import BadRowError, Location

Kind = Literal["requests", "logs", "selections"]
KINDS: tuple[Kind, ...] = ("requests", "logs", "selections")

#: Default cap on candidates per component. Real catalogs have 1 to 100+; the cap only exists so that a
#: broken upstream (a whole catalog pasted into one row) fails loudly instead of exhausting memory.
DEFAULT_MAX_CANDIDATES = 4096

# Every rule a row can break, with the words a user sees in an error message.
RULES: dict[str, str] = {
    "invalid-json": "the line is not valid JSON",
    "not-an-object": "a row must be a JSON object",
    "missing-field": "a required field is missing",
    "wrong-type": "a field has the wrong type",
    "non-finite-number": "features and scores must be finite numbers (no NaN or infinity)",
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
    "duplicate-request-id": "request_id must be unique within a file",
    "unknown-component": "a request has a component the model was not trained on",
    "unknown-request": "a selection names a request_id that is not among the requests",
    "selection-components": "a selection must pick one element for every component of its request, and no others",
    "selection-not-candidate": "a selected id must be one of that component's candidates",
}


def _custom(rule: str, message: str, **context: Any) -> PydanticCustomError:
    assert rule in RULES, rule
    return PydanticCustomError(rule, message, context)


def _check_click(value: int) -> int:
    if value not in (0, 1):
        raise _custom("click-not-binary", "click must be 0 or 1, got {value}", value=value)
    return value


def _check_propensity(value: float | None) -> float | None:
    if value is not None and not 0.0 < value <= 1.0:
        raise _custom("propensity-range", "propensity must be in (0, 1], got {value}", value=value)
    return value


def _check_revenue(value: float | None) -> float | None:
    if value is not None and value < 0:
        raise _custom("revenue-negative", "revenue must be >= 0, got {value}", value=value)
    return value


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Features = list[FiniteFloat]


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

    @model_validator(mode="after")
    def _candidates_are_sound(self) -> "Request":
        if not self.components:
            raise _custom("no-components", "components is empty")
        for name, candidates in self.components.items():
            if not candidates:
                raise _custom("empty-candidates", "component {name!r} has no candidates", name=name)
            seen: set[str] = set()
            for element in candidates:
                if element.id in seen:
                    raise _custom(
                        "duplicate-element-id",
                        "component {name!r} lists element {id!r} twice",
                        name=name,
                        id=element.id,
                    )
                seen.add(element.id)
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
        return f"{field}-components", f"{field} misses components {missing} / names components the row lacks {extra}"
    for name, chosen in combination.items():
        if chosen not in candidates[name]:
            return f"{field}-not-candidate", f"{field}[{name!r}] = {chosen!r} is not among the candidates of {name!r}"
    return None


def check_combination(request: Request, combination: dict[str, str], field: Literal["shown", "selection"]) -> None:
    problem = combination_problem({n: request.candidate_ids(n) for n in request.components}, combination, field)
    if problem:
        raise _custom(problem[0], problem[1].replace("{", "{{").replace("}", "}}"))


MODELS: dict[Kind, type[_Row]] = {"requests": Request, "logs": LogRow, "selections": Selection}


def _path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def rule_of(error: dict[str, Any]) -> tuple[str, str]:
    """Map one pydantic error to (rule name, human detail)."""
    kind, loc, msg = error["type"], tuple(error["loc"]), error["msg"]
    where = _path(loc)
    if kind in RULES:
        return kind, msg
    if kind == "json_invalid":
        return "invalid-json", msg
    if kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
        return "not-an-object", f"expected a JSON object, got {type(error.get('input')).__name__}"
    if kind == "missing":
        return "missing-field", f"{where}: field required"
    if loc and loc[0] == "click":
        return "click-not-binary", f"click must be 0 or 1, got {error.get('input')!r}"
    if loc and loc[0] == "propensity" and kind == "finite_number":
        return "propensity-range", f"propensity must be in (0, 1], got {error.get('input')!r}"
    if kind == "finite_number":
        return "non-finite-number", f"{where}: {msg}, got {error.get('input')!r}"
    return "wrong-type", f"{where}: {msg}, got {error.get('input')!r}"


def parse_row(kind: Kind, raw: bytes | str | dict[str, Any], location: Location, max_candidates: int) -> _Row:
    """Validate one raw row (a JSON line or a dict from Parquet) into its typed object, or raise BadRowError."""
    model = MODELS[kind]
    try:
        row = model.model_validate(raw) if isinstance(raw, dict) else model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        rule, detail = rule_of(exc.errors(include_url=False)[0])
        raise BadRowError(location, rule, detail) from None
    if isinstance(row, Request):
        for name, candidates in row.components.items():
            if len(candidates) > max_candidates:
                raise BadRowError(
                    location,
                    "too-many-candidates",
                    f"component {name!r} has {len(candidates)} candidates, the limit is {max_candidates} "
                    "(raise it with --max-candidates)",
                )
    return row


class DatasetShape:
    """Rules that span rows: feature lengths fixed across a data set, request ids unique within a file.

    The first row to show a length sets it; a later row that disagrees is an error naming both places.
    """

    def __init__(self) -> None:
        self.lengths: dict[str, tuple[int, Location]] = {}
        self._request_ids: set[str] = set()
        self._file: str | None = None

    def check(self, row: _Row, location: Location) -> None:
        """Raise BadRowError if `row` disagrees with the rows seen before it; else remember it."""
        if location.path != self._file:
            self._file, self._request_ids = location.path, set()
        if row.request_id in self._request_ids:
            raise BadRowError(location, "duplicate-request-id", f"request_id {row.request_id!r} appears twice")
        if isinstance(row, Request):
            # Check every length before remembering any, so that a rejected (skipped) row leaves no trace.
            pending: list[tuple[str, str, int]] = [("user", "user", len(row.user))]
            if row.ad is not None:
                pending.append(("ad", "ad", len(row.ad)))
            for name, candidates in row.components.items():
                for element in candidates:
                    pending.append((f"component:{name}", f"features of {name!r} element {element.id!r}", len(element.features)))
            staged: dict[str, tuple[int, Location]] = {}
            for key, what, length in pending:
                known = self.lengths.get(key) or staged.get(key)
                if known is None:
                    staged[key] = (length, location)
                elif known[0] != length:
                    raise BadRowError(
                        location, "feature-length", f"{what} has length {length}, but {known[0]} was set by {known[1]}"
                    )
            self.lengths.update(staged)
        self._request_ids.add(row.request_id)

    def feature_dims(self) -> dict[str, int]:
        """Component name -> element feature length, for the components seen so far."""
        return {key.split(":", 1)[1]: n for key, (n, _) in self.lengths.items() if key.startswith("component:")}
