"""Serving decisions: generate K combinations, score them with the reward model, answer one.

Greedy answers (propensity 1) come in three modes, from the most thorough to the cheapest:

- `search`: the generator's most likely combination plus K samples, all scored by the reward model; the
  best few are then refined by a few passes of coordinate ascent on the reward model (each component
  re-chosen given the others; cost grows with the sum of the pool sizes, never their product), and the best
  result is answered. Several starting points, because pairwise interactions give the reward model local
  optima that one ascent can stop in. Requests whose pools make at most `enumerate_up_to` combinations get
  the reward model's exact argmax instead (every combination scored), so higher orders no local search sees
  are found.
- `best-of-k`: the generator's most likely combination plus K samples, scored by the reward model; the best
  is answered. No ascent: the generator, trained to make the best of K good, does the search. Small pools
  are enumerated as in `search`. genco.lean runs this mode (and `argmax`) as one tensor program.
- `argmax`: the generator's most likely combination alone; the reward model only prices it (the score).

Explore mode: one combination sampled from pi mixed with a little uniform exploration per component, with
its exact propensity, so that served traffic is a valid log for the next round of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from genco.contract import DEFAULT_MAX_CANDIDATES, Request, Selection
from genco.data import EncodedRows, batch_indices, collate, encode, selections_at
from genco.ensemble import reward_models
from genco.lean import GreedyProgram, every_combination, grid_inputs
from genco.model import Encoded, GenCO
from genco.noise import RequestNoise
from genco.request_grid import grid_selections, request_grid
from genco.options import MAX_K, OptionError, bounded, check_options

if TYPE_CHECKING:
    from genco.ensemble import EnsembleEncoded, RewardEnsemble
    from genco.files import ReadReport


MODES = ("search", "best-of-k", "argmax")


@dataclass
class SelectConfig:
    mode: str = "best-of-k"  # greedy answers: one of MODES (see the module's docstring)
    k: int = bounded(16, ge=0, le=MAX_K)  # samples scored per request
    refine_passes: int = bounded(2, ge=0, le=100)  # coordinate-ascent passes on the reward model (0: sampling alone)
    refine_starts: int = bounded(4, ge=1, le=MAX_K + 1)  # the best this many of the 1 + K candidates are each refined
    epsilon: float = bounded(0.05, ge=0, le=1)  # explore mode: share of uniform exploration per component
    batch_size: int = bounded(256, ge=1, le=1 << 16)  # requests per forward pass at most (fewer when K or pools are large)
    enumerate_up_to: int = bounded(256, ge=0, le=4096)  # search and best-of-k: requests with at most this many combinations score them all

    def __post_init__(self) -> None:
        check_options(self)
        if self.mode not in MODES:
            raise OptionError("mode", " or ".join(repr(m) for m in MODES), self.mode)

    def program_inputs(self) -> tuple[int, int]:
        """The lean program's K and enumerate_up_to for this mode (argmax: no samples, no enumeration)."""
        return (0, 0) if self.mode == "argmax" else (self.k, self.enumerate_up_to)


@dataclass
class Choices:
    """Chosen positions (n, M) within components (-1: absent), predicted P(click) and propensity per row."""

    positions: np.ndarray
    score: np.ndarray
    propensity: np.ndarray
    selections: list[dict[str, str]]


def swap_scores(model: GenCO | RewardEnsemble, enc: Encoded | EnsembleEncoded, combo: torch.Tensor, m: int) -> torch.Tensor:
    """The creative logit of `combo` (B, M) with component m's element replaced by each of its candidates in
    turn, the other components fixed: (B, N_m), -inf on padding. One step of coordinate ascent; also how
    genco.attribution asks the reward model about single elements."""
    a, b = enc.slices[m]
    trial = combo[:, None, :].repeat(1, b - a, 1)  # (B, N_m, M): every candidate of m, others fixed
    trial[:, :, m] = torch.arange(b - a)
    creative, _, _ = model.reward(enc, trial)  # (B, N_m)
    return creative.masked_fill(~enc.mask[:, a:b], float("-inf"))


def coordinate_ascent(model: GenCO | RewardEnsemble, enc: Encoded | EnsembleEncoded, combo: torch.Tensor, best: torch.Tensor,
                      passes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Improve (B, M) combinations whose creative logits (B,) are `best`, one component at a time. Returns combo, creative logit."""
    for _ in range(passes):
        changed = False
        for m, (a, b) in enumerate(enc.slices):
            if b - a <= 1:
                continue
            value, pick = swap_scores(model, enc, combo, m).max(dim=1)
            better = (value > best + 1e-6) & (combo[:, m] >= 0)
            if better.any():
                changed = True
                combo[better, m] = pick[better]
                best = torch.where(better, value, best)
        if not changed:
            break
    return combo, best


def refine(model: GenCO | RewardEnsemble, enc: Encoded | EnsembleEncoded, candidates: torch.Tensor,
           creative: torch.Tensor, config: SelectConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinate ascent from the best `refine_starts` candidates (B, C, M) scored (B, C): best combo (B, M), logit (B,)."""
    B, C, M = candidates.shape
    starts = min(config.refine_starts, C)
    value, top = creative.topk(starts, dim=1)  # (B, S): the starts are already scored
    start = candidates.gather(1, top[..., None].expand(-1, -1, M)).reshape(B * starts, M)
    combo, value = coordinate_ascent(model, enc.repeat_rows(starts), start, value.reshape(B * starts), config.refine_passes)
    value, best = value.view(B, starts).max(dim=1)
    return combo.view(B, starts, M)[torch.arange(B), best], value


def pool_sizes(enc: Encoded | EnsembleEncoded) -> torch.Tensor:
    """Candidates of every component of every row (0 where the row lacks it): (B, M)."""
    return torch.stack([enc.mask[:, a:b].sum(dim=1) for a, b in enc.slices], dim=1)


def exact_argmax(model: GenCO | RewardEnsemble, enc: Encoded | EnsembleEncoded) -> tuple[torch.Tensor, torch.Tensor]:
    """The reward model's best combination of every row, every combination scored: (B, M), creative logit (B,).
    For small pools only: the cost is the product of the pool sizes."""
    every = torch.from_numpy(every_combination(pool_sizes(enc).numpy()))  # (B, E, M), -2 past a row's last
    creative, _, _ = model.reward(enc, every.clamp(min=-1))  # (B, E)
    value, at = creative.masked_fill((every < -1).any(dim=2), float("-inf")).max(dim=1)
    return every[torch.arange(len(every)), at], value


def generate_and_score(model: GenCO | RewardEnsemble, enc: Encoded | EnsembleEncoded, noise: RequestNoise, config: SelectConfig
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy answers of one batch in config.mode, from the generator's proposals (rows the search enumerates
    aside): (B, M) positions, creative logit (B,)."""
    k = 0 if config.mode == "argmax" else config.k
    candidates, _ = model.generate(enc, k, noise, with_greedy=True)  # (B, 1 + k, M)
    creative, _, _ = model.reward(enc, candidates)  # (B, 1 + k)
    if config.mode == "search" and config.refine_passes:
        return refine(model, enc, candidates, creative, config)
    value, best = creative.max(dim=1)
    return candidates[torch.arange(len(best)), best], value


def greedy_choice(model: GenCO | RewardEnsemble, enc: Encoded | EnsembleEncoded, row_key: np.ndarray, config: SelectConfig
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The greedy answer of every row of a batch: (B, M) positions, creative logit (B,). A function of each
    request and the model alone (samples keyed by the request), whatever rows share the batch."""
    if config.mode == "argmax" or config.enumerate_up_to <= 1:
        return generate_and_score(model, enc, RequestNoise(row_key), config)
    small = pool_sizes(enc).clamp(min=1).prod(dim=1) <= config.enumerate_up_to  # (B,) rows of few combinations
    if small.all():
        return exact_argmax(model, enc)
    if not small.any():
        return generate_and_score(model, enc, RequestNoise(row_key), config)
    few, many = small.nonzero().squeeze(1), (~small).nonzero().squeeze(1)
    combo = torch.empty((len(small), len(enc.slices)), dtype=torch.long)
    value = torch.empty(len(small))
    combo[few], value[few] = exact_argmax(model, enc.rows(few))
    combo[many], value[many] = generate_and_score(model, enc.rows(many), RequestNoise(row_key[many.numpy()]), config)
    return combo, value


#: Floats one forward pass may hold (about 256 MB): batches shrink as K, the pools or the ensemble grow, so
#: memory stays bounded whatever they are.
CELL_BUDGET = 1 << 26


def largest_pools(data: EncodedRows) -> list[int]:
    """The largest candidate count of each component over the rows: what rows_per_batch sizes batches by."""
    return [int(data.candidate_counts(name).max(initial=0)) for name in data.schema.components]


def rows_per_batch(model: GenCO | RewardEnsemble, pools: list[int], config: SelectConfig) -> int:
    """config.batch_size, or fewer rows so that the largest tensors of one batch stay within CELL_BUDGET.
    pools: the largest candidate count of each component.

    Per row, the widest of: the generator's attention over all T candidates (heads x T x T), the reward
    model on 1 + K combinations, and the coordinate ascent's trials (starts x largest pool), each with
    M elements of width about 4 d + hidden; times the number of reward models."""
    c, M = model.config, max(len(pools), 1)
    T, widest = max(sum(pools), 1), max(pools, default=1)
    width = 4 * c.dim + c.hidden + c.heads * M
    members = len(reward_models(model))
    per_row = members * max(c.heads * T * T + T * width,
                            (1 + max(config.k, config.enumerate_up_to)) * M * width,
                            min(config.refine_starts, 1 + config.k) * widest * M * width)
    return int(max(1, min(config.batch_size, CELL_BUDGET // per_row)))


def click_probability(logit: np.ndarray) -> np.ndarray:
    """The lean program's click logits (B,) as P(click) in float64: in numpy, since a torch call per answer
    costs more than the arithmetic."""
    return 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))


@torch.inference_mode()
def choose(model: GenCO | RewardEnsemble, data: EncodedRows, *, greedy: bool, config: SelectConfig | None = None, seed: int = 0,
           program: GreedyProgram | None = None) -> Choices:
    """Pick one combination for every row of `data` (requests).

    Greedy: the answer is a function of the request and the model alone (samples keyed by the request, see
    genco.noise), whatever the seed and the rows around it; propensity 1. Explore: sampled with `seed`, and
    the propensity is the probability of what was served. `program` (genco.lean.greedy_program of this model
    and config.mode) answers greedy calls of the best-of-k and argmax modes: the same answers, faster."""
    config = config or SelectConfig()
    if any(module.training for module in model.modules()):  # eval() sets every module's flag: costly per call
        model.eval()
    generator = torch.Generator().manual_seed(seed)
    M = len(data.schema.components)
    lean = greedy and program is not None and config.mode != "search"
    positions, scores, propensities, selections = [np.empty((0, M), np.int64)], [np.empty(0)], [np.empty(0)], []
    for idx in batch_indices(len(data), rows_per_batch(model, largest_pools(data), config)):
        if lean:
            inputs = grid_inputs(collate(data, idx, grid=True), *config.program_inputs())
            chosen, logit = program.answer(inputs)
            positions.append(chosen)
            scores.append(click_probability(logit))
            propensities.append(np.ones(len(idx)))
            selections += selections_at(data, idx, chosen)
            continue
        batch = collate(data, idx)
        enc = model.encode(batch)
        if greedy:
            combo, creative_best = greedy_choice(model, enc, batch.row_key, config)
            logit = enc.appeal + creative_best
            propensity = torch.ones(batch.size)
        else:
            sampled, log_prob = model.generate(enc, 1, generator, epsilon=config.epsilon)  # (B, 1, M), (B, 1)
            combo, propensity = sampled[:, 0], log_prob[:, 0].exp()
            logit = model.click_logit(enc, sampled)[:, 0]
        positions.append(combo.numpy())
        scores.append(torch.sigmoid(logit).double().numpy())
        propensities.append(propensity.double().numpy())
        selections += selections_at(data, idx, combo.numpy())
    return Choices(np.concatenate(positions), np.concatenate(scores), np.concatenate(propensities), selections)


def select_requests(model: GenCO | RewardEnsemble, requests: list[Request], *, greedy: bool, config: SelectConfig | None = None,
                    seed: int = 0, checked: bool = False, program: GreedyProgram | None = None) -> list[Selection]:
    """Typed requests in, typed selections out (same order). Requests that do not fit the model raise
    BadRowError (with the request's index), unless `checked` says a RowChecker with its schema passed them."""
    config = config or SelectConfig()
    if greedy and program is not None and config.mode != "search":
        return lean_select(model, requests, config, program, checked)
    data = encode(requests, model.schema, checked=checked)
    chosen = choose(model, data, greedy=greedy, config=config, seed=seed, program=program)
    return [
        Selection(request_id=r.request_id, selection=s, score=float(score), propensity=float(p))
        for r, s, score, p in zip(requests, chosen.selections, chosen.score, chosen.propensity)
    ]


def lean_select(model: GenCO | RewardEnsemble, requests: list[Request], config: SelectConfig, program: GreedyProgram,
                checked: bool) -> list[Selection]:
    """select_requests' greedy answers by the lean program, the requests written into its grid directly
    (genco.request_grid): the answers choose(..., program=program) gives, without the element tables."""
    schema = model.schema
    if not checked:
        for i, request in enumerate(requests):
            schema.require(request, i)
    pools = [max((len(r.components.get(name, ())) for r in requests), default=0) for name in schema.components]
    out: list[Selection] = []
    for idx in batch_indices(len(requests), rows_per_batch(model, pools, config)):
        part = [requests[i] for i in idx]
        positions, logit = program.answer(request_grid(part, schema, *config.program_inputs()))
        score = click_probability(logit)
        out += [Selection(request_id=r.request_id, selection=s, score=float(p), propensity=1.0)
                for r, s, p in zip(part, grid_selections(part, schema, positions), score)]
    return out


def select_file(model: GenCO | RewardEnsemble, requests_path, out_path, *, greedy: bool, config: SelectConfig | None = None, seed: int = 0,
                on_bad_row: str = "error", chunk: int = 4096, max_candidates: int = DEFAULT_MAX_CANDIDATES,
                program: GreedyProgram | None = None) -> ReadReport:
    """`genco select`: stream requests, answer them chunk by chunk, write selections atomically (same order).

    Requests are checked against the contract and against the model (feature lengths, known components);
    a bad one stops the run (exit 2) or, with on_bad_row="skip", gets no selection and is counted.
    """
    from genco import console
    from genco.files import AtomicWriter, ReadReport, read_located

    report = ReadReport()
    pending: list[Request] = []

    def flush(writer: AtomicWriter) -> None:
        for selection in select_requests(model, pending, greedy=greedy, config=config, seed=seed + writer.rows, checked=True,
                                         program=program):
            writer.write(selection)
        pending.clear()

    with AtomicWriter(out_path, "selections") as writer, console.progress("selecting", None) as bar:
        for _, row in read_located(requests_path, "requests", on_bad_row=on_bad_row, report=report,
                                    schema=model.schema, max_candidates=max_candidates):
            pending.append(row)
            if len(pending) == chunk:
                flush(writer)
                bar.advance(chunk)
        if pending:
            flush(writer)
    if report.skipped:
        console.note(report.summary())
    return report
