"""GenCO: a non-autoregressive generator and a multi-instance reward model sharing one policy network phi.

Shapes: B rows, T candidate slots (all components side by side, see genco.data.Batch), M components,
K combinations per row, d element width, C context width.

    context encoder       user, ad features, hashed ad id             -> h (B, C), product appeal (B,)
    element encoder       features + component (+ hashed id)          -> e (B, T, d), id effect (B, T)
    generator             cross-component attention over all candidates of the request -> a (B, T, d)
                          s = phi(h, e, a); pi = softmax(sharpness_m * s) within each component;
                          K combinations sampled in parallel, every component at once (non-autoregressive)
    reward model          bag = one combination, instances = its elements;
                          attention among the chosen elements -> a_bag; instance scores s_m = phi(h, e_m, a_bag_m)
                          (the same phi); creative logit = sum_m alpha_m s_m (MIL attention pooling);
                          P(click) = sigmoid(appeal + creative)

The product's own appeal lives in `appeal`, apart from the creative part, so that a popular product's clicks
are not credited to whatever creatives it happened to show, and the policy gradient is rewarded with the
creative part alone.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from genco.data import Batch, EncodedRows, FeatureSchema
from genco.noise import Randomness, uniform
from genco.options import OptionError, bounded, check_options


@dataclass
class ModelConfig:
    context_dim: int = bounded(8, ge=1, le=1024)  # h_i, as in the paper
    dim: int = bounded(32, ge=1, le=4096)  # element embeddings and attention; a multiple of heads
    heads: int = bounded(2, ge=1, le=64)
    hidden: int = bounded(64, ge=1, le=16384)  # phi's deep part
    dropout: float = bounded(0.1, ge=0, lt=1)
    attention: bool = True  # False: uniform attention weights and uniform pooling (the paper's ablation)
    cross_component: bool = True  # False: no attention vector at all, every element scored alone (a diagnostic)
    element_ids: bool = True  # False: elements are known by their features and component only
    ad_ids: bool = True  # False: products are known by their features only
    id_vectors: bool = True  # element identity in the embedding itself (so it reaches attention and phi's pairs)
    id_shrinkage: float = bounded(10.0, ge=0, le=1e6)  # impressions at which an id's own vector counts half
    combination_effects: bool = True  # a shrunk effect per whole combination: what its elements cannot explain
    combination_shrinkage: float = bounded(50.0, ge=0, le=1e6)  # impressions at which it counts half
    context_attention: bool = False  # attention queries see the context (which partner matters may depend on the user)
    feature_effects: bool = True  # an exactly fitted linear term in each element's features and user x features (genco.refit)
    pair_effects: bool = True  # an exactly fitted effect per pair of element ids (MVT's pairwise terms; genco.refit)
    user_id_effects: bool = True  # an exactly fitted user x element-id term, U weights per id (genco.refit), for U <= USER_ID_MAX_USER

    def __post_init__(self) -> None:
        check_options(self)
        if self.dim % self.heads:
            raise OptionError("dim", f"a multiple of heads ({self.heads})", self.dim)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Encoded:
    """A batch after the encoders: everything the generator and the reward model need, computed once."""

    h: torch.Tensor  # (B, C) context
    appeal: torch.Tensor  # (B,) logit of the product and user, without creatives
    e: torch.Tensor  # (B, T, d) elements
    effect: torch.Tensor  # (B, T) each element's own effect, the wide part's: by id, by features, by user x either
    mask: torch.Tensor  # (B, T) real candidates
    slices: list[tuple[int, int]]  # component m owns slots [a, b)
    slot_component: torch.Tensor  # (T,) component of each slot
    bucket: torch.Tensor  # (B, T) hashed element id of each slot (what a combination's own effect is keyed by)

    def _rows(self, index) -> "Encoded":
        return replace(self, h=self.h[index], appeal=self.appeal[index], e=self.e[index], effect=self.effect[index],
                       mask=self.mask[index], bucket=self.bucket[index])

    def rows(self, which: slice) -> "Encoded":
        return self._rows(which)

    def repeat_rows(self, times: int) -> "Encoded":
        """Every row `times` times in a row: (B, ...) -> (B * times, ...)."""
        return self._rows(torch.arange(self.h.shape[0]).repeat_interleave(times))

    def detached(self) -> "Encoded":
        return replace(self, h=self.h.detach(), appeal=self.appeal.detach(), e=self.e.detach(), effect=self.effect.detach())


@dataclass
class BagTerms:
    """The reward model's view of combinations (B, K, M). The creative logit is linear in the id tables:
    creative = sum_m alpha_m * (instance score without its id effect + element_effect[bucket_m])
               + trust * combination_effect[combination]   (what genco.refit solves exactly)."""

    creative: torch.Tensor  # (B, K)
    instance: torch.Tensor  # (B, K, M) instance scores (the element's id effect included)
    present: torch.Tensor  # (B, K, M)
    alpha: torch.Tensor  # (B, K, M) MIL pooling weights, 0 where absent
    bucket: torch.Tensor  # (B, K, M) element id bucket of each chosen element
    combination: torch.Tensor | None  # (B, K) combination bucket (None without combination effects)
    trust: torch.Tensor | None  # (B, K) how much the combination's own effect counts
    pair: torch.Tensor | None  # (B, K, P) pair bucket of every pair of components (None without pair effects)
    pair_present: torch.Tensor | None  # (B, K, P) both elements of the pair present


class CrossAttention(nn.Module):
    """Multi-head attention of every item over the valid items of its set; uniform weights when not learned.

    Cross-component: an item attends to the items of the other components only (its own component's other
    candidates are its rivals, not its partners). Besides content (query . key), each head learns a bias per
    pair of components (which components interact at all: title with image, image with badge, ...), as
    relative-position biases do in text. Not enabled: no vector at all (zeros), every item on its own.
    """

    def __init__(self, dim: int, heads: int, components: int, learned: bool, enabled: bool = True, context: int = 0):
        super().__init__()
        self.heads, self.learned, self.enabled = heads, learned, enabled
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.pair_bias = nn.Parameter(torch.zeros(heads, components, components))
        # context-aware queries: which partner an element looks for may depend on the user (starts at zero)
        self.context_query = nn.Linear(context, dim, bias=False) if context else None
        if self.context_query is not None:
            nn.init.zeros_(self.context_query.weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, component: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        N, L, d = x.shape  # x (N, L, d), mask (N, L), component (L,): the component of each item; context (n, C)
        if not self.enabled:  # no cross-component vector at all: every item is scored on its own
            return x.new_zeros(N, L, d)
        weights, v = self.weights(x, mask, component, context)  # (N, H, L, L), (N, H, L, dh)
        return self.out((weights @ v).transpose(1, 2).reshape(N, L, d))  # (N, L, d)

    def weights(self, x: torch.Tensor, mask: torch.Tensor, component: torch.Tensor,
                context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention weights (N, H, L, L), each row summing to 1 over the valid items of the other components
        (0 for a row with none), and the values (N, H, L, dh). Kept apart from forward for genco.attention_map.
        context (n, C): one per request, N / n sets of items in a row each (a request's K bags)."""
        N, L, d = x.shape
        q, k, v = self.qkv(x).view(N, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (N, H, L, dh) each
        if self.context_query is not None and context is not None:
            query = self.context_query(context)  # (n, d): one per request
            if context.shape[0] != N:  # each request's K bags in a row
                query = query.repeat_interleave(N // context.shape[0], dim=0)  # (N, d)
            q = q + query.view(N, self.heads, 1, d // self.heads)
        if self.learned:
            logits = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)  # (N, H, L, L)
            logits = logits + self.pair_bias[:, component][:, :, component]  # (H, L, L) broadcast over N
        else:
            logits = x.new_zeros(N, self.heads, L, L)
        # cross-component: an item attends to the items of the other components, never to its own component
        other = component[:, None] != component[None, :]  # (L, L)
        logits = logits.masked_fill(~(mask[:, None, None, :] & other), float("-inf"))
        return torch.softmax(logits, dim=-1).nan_to_num(0.0), v  # a set with no valid item attends to nothing


class _NoFeatures(nn.Module):
    """The projection of a component whose elements have no features: nothing (its embedding carries it)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.new_zeros(*features.shape[:-1], self.dim)


#: The user x element-id table holds id buckets x U weights (1 MB at U = 4): past this many user features it
#: would cost more memory than it can be fed clicks for, and the model goes without it.
USER_ID_MAX_USER = 64


def shrinkage_trust(shown: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """n / (n + shrinkage): how much an id's (or a combination's) own parameters count, given n impressions."""
    return shown / (shown + shrinkage) if shrinkage > 0 else (shown > 0).to(shown.dtype)


_COMBINATION_MIX = torch.tensor([0x9E3779B97F4A7C15 - (1 << 64), 0x632BE59BD9B4E019, 0x7C159E3779B97F4B,
                                 0x5851F42D4C957F2D, 0x2545F4914F6CDD1D, 0x14057B7EF767814F], dtype=torch.long)


def combination_bucket(buckets: torch.Tensor, present: torch.Tensor, size: int) -> torch.Tensor:
    """A hash of a combination: element id buckets (..., M) and presence (..., M) -> bucket in [0, size) (...).
    Order-aware (component m's element is mixed with its own constant); absent components add nothing."""
    M = buckets.shape[-1]
    mix = _COMBINATION_MIX[torch.arange(M) % len(_COMBINATION_MIX)] + 2 * torch.arange(M)  # a distinct odd number each
    terms = torch.where(present, (buckets + 1) * mix, 0).unbind(-1)  # M x (...), int64
    h = terms[0]
    for term in terms[1:]:  # added one by one: wrapping int64 adds (ONNX Runtime's ReduceSum does not wrap alike)
        h = h + term
    h = h ^ (h >> 29)
    return torch.remainder(h * 0x2545F4914F6CDD1D, size)


_PAIR_MIX = (0x9E3779B97F4A7C15 - (1 << 64), 0x5851F42D4C957F2D, 0x14057B7EF767814F, 0x2545F4914F6CDD1D)


def component_pairs(M: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair of components m < m': (P,) first and (P,) second, P = M (M - 1) / 2."""
    first, second = np.triu_indices(M, 1)
    return torch.as_tensor(first, dtype=torch.long), torch.as_tensor(second, dtype=torch.long)


def pair_buckets(buckets: torch.Tensor, present: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A hash of every pair of chosen elements: element id buckets (..., M) and presence (..., M) -> bucket in
    [0, size) per pair of components (..., P) and whether both are present (..., P). Which two components
    the pair joins is part of the hash."""
    first, second = component_pairs(buckets.shape[-1])
    which = torch.arange(len(first)) + 1
    h = (buckets[..., first] + 1) * _PAIR_MIX[0] + (buckets[..., second] + 1) * _PAIR_MIX[1] + which * _PAIR_MIX[2]
    h = h ^ (h >> 29)
    return torch.remainder(h * _PAIR_MIX[3], size), present[..., first] & present[..., second]


def linear(inputs: int, outputs: int, bias: bool = True) -> nn.Linear:
    """nn.Linear, also for zero inputs (`user: []` and no ad features, elements without features): the output
    is then the bias alone (or zeros), and the no-op initialisation of the empty weight needs no warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op", UserWarning)
        return nn.Linear(inputs, outputs, bias=bias)


def _projection(features: int, dim: int) -> nn.Module:
    return nn.Linear(features, dim) if features > 0 else _NoFeatures(dim)


class Phi(nn.Module):
    """The shared policy network: the score of element e in context h, given what it attends to (a).

    Wide and deep. The wide part is linear in the element, bilinear in context x element (personalisation)
    and in element x attention (pairs of elements): the effects clicks carry, in a form that sparse feedback
    can estimate. The deep part (an MLP, starting at zero) learns what remains.
    """

    def __init__(self, C: int, d: int, hidden: int, dropout: float):
        super().__init__()
        self.element = nn.Linear(d, 1)
        self.context = nn.Linear(C, d, bias=False)
        self.pair = nn.Linear(d, d, bias=False)
        self.deep = nn.Sequential(nn.Linear(C + 2 * d, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        nn.init.zeros_(self.deep[-1].weight)

    def forward(self, h: torch.Tensor, e: torch.Tensor, a: torch.Tensor, effect: torch.Tensor) -> torch.Tensor:
        """(..., C), (..., d), (..., d), (...) -> (...)"""
        wide = self.element(e).squeeze(-1) + (self.context(h) * e).sum(-1) + (self.pair(e) * a).sum(-1)
        return wide + self.deep(torch.cat([h, e, a], dim=-1)).squeeze(-1) + effect


def mix_uniform(log_pi: torch.Tensor, enc: Encoded, epsilon: float) -> torch.Tensor:
    """log of (1 - eps) * pi + eps * uniform, within each component: every candidate keeps a chance."""
    if epsilon <= 0:
        return log_pi
    parts = []
    for a, b in enc.slices:
        valid = enc.mask[:, a:b]
        n = valid.sum(dim=1, keepdim=True).clamp(min=1)
        p = (1 - epsilon) * log_pi[:, a:b].exp() + epsilon / n
        parts.append(p.log().masked_fill(~valid, float("-inf")))
    return torch.cat(parts, dim=1)


class GenCO(nn.Module):
    def __init__(self, schema: FeatureSchema, config: ModelConfig | None = None):
        super().__init__()
        self.schema, self.config = schema, config or ModelConfig()
        c = self.config
        d, C, U, A, M = c.dim, c.context_dim, schema.user_dim, schema.ad_dim, len(schema.components)
        # context encoder (linear plus a small MLP, so that h . e stays bilinear in user x element) and appeal
        self.ad_embedding = nn.Embedding(schema.ad_buckets, C)
        self.context = nn.Linear(U + A + C, C)
        self.context_mlp = nn.Sequential(nn.Linear(U + A + C, 2 * C), nn.ReLU(), nn.Linear(2 * C, C))
        self.ad_appeal = nn.Embedding(schema.ad_buckets, 1)
        self.appeal = linear(U + A, 1)
        # element encoder: one feature projection per component (feature lengths differ)
        self.feature_proj = nn.ModuleList(_projection(schema.feature_dims[m], d) for m in schema.components)
        self.component = nn.Embedding(M, d)
        self.element_effect = nn.Embedding(schema.id_buckets, 1)  # what the features cannot see, per element
        # Element identity as a vector added to the feature embedding, so that ids reach the cross-component
        # attention and phi's pair term (id-only elements can interact). Shrunk by how often the id was shown in
        # the training logs, n / (n + id_shrinkage): a rare or new id stays at what its features say.
        self.id_vector = nn.Embedding(schema.id_buckets, d)
        self.register_buffer("id_counts", torch.zeros(schema.id_buckets))  # impressions per id bucket (set by training)
        # The bag's own effect (pairs and higher orders its instances cannot account for), keyed by a hash of its
        # elements and shrunk the same way: a combination seen a few times stays at what its elements say.
        self.combination_effect = nn.Embedding(schema.combination_buckets, 1)
        self.register_buffer("combination_counts", torch.zeros(schema.combination_buckets))
        # A wide term per element, [1, user] . W_m . features: set by the exact wide fit (genco.refit),
        # never by stochastic steps, so it is a buffer (zero until then). Padded to the widest feature vector.
        widest = max([schema.feature_dims[m] for m in schema.components], default=0)
        self.register_buffer("feature_effect", torch.zeros(M, 1 + U, widest))
        # An effect per pair of element ids (MVT's pairwise terms): what two elements do together that neither
        # their own effects nor the network say; set by the exact fit alone, like feature_effect.
        self.register_buffer("pair_effect", torch.zeros(schema.pair_buckets) if c.pair_effects and M > 1 else None)
        # A personal effect per element id, user . w[element] (the paper's context x widget terms in MVT's own form):
        # which badge suits whom, for elements known by id alone. Set by the exact fit alone, like pair_effect.
        user_ids = c.user_id_effects and c.element_ids and 0 < U <= USER_ID_MAX_USER
        self.register_buffer("user_id_effect", torch.zeros(schema.id_buckets, U) if user_ids else None)
        # generator: cross-component attention over every candidate, and how peaked pi is per component.
        # The policy gradient can sharpen pi here instead of inflating the scores phi shares with the reward model.
        context = C if c.context_attention else 0
        self.generator_attention = CrossAttention(d, c.heads, M, learned=c.attention, enabled=c.cross_component, context=context)
        self.log_sharpness = nn.Parameter(torch.zeros(M))
        self.phi = Phi(C, d, c.hidden, c.dropout)
        # the generator's own correction to phi, learned by the policy gradient alone (starts at zero)
        self.policy_head = nn.Sequential(nn.Linear(C + 2 * d, c.hidden), nn.ReLU(), nn.Linear(c.hidden, 1))
        nn.init.zeros_(self.policy_head[-1].weight)
        nn.init.zeros_(self.policy_head[-1].bias)
        # reward model: attention among the chosen elements, MIL attention pooling into the bag logit
        self.bag_attention = CrossAttention(d, c.heads, M, learned=c.attention, enabled=c.cross_component, context=context)
        self.pool = nn.Sequential(nn.Linear(2 * d, d), nn.Tanh(), nn.Linear(d, 1))
        self.element_bias = nn.Parameter(torch.zeros(()))
        nn.init.zeros_(self.element_effect.weight)
        nn.init.zeros_(self.id_vector.weight)
        nn.init.zeros_(self.combination_effect.weight)
        nn.init.zeros_(self.ad_appeal.weight)
        nn.init.zeros_(self.pool[-1].weight)  # pooling starts uniform
        nn.init.constant_(self.appeal.bias, -3.0)  # clicks are rare: start near a few percent

    # -- encoders ------------------------------------------------------------------------------------------------

    def count_ids(self, data: EncodedRows, rows: np.ndarray) -> None:
        """Set id_counts and combination_counts: how often each element id bucket, and each combination, was shown
        in `rows` of the training logs."""
        shown = np.full((len(rows), len(self.schema.components)), -1, dtype=np.int64)  # (n, M) bucket shown, -1 none
        for m, name in enumerate(self.schema.components):
            column = data.columns[name]
            at = column["shown"][rows]
            has = at >= 0
            shown[has, m] = column["table_bucket"][column["members"][column["offsets"][rows[has]] + at[has]]]
        ids = shown[shown >= 0]
        self.id_counts.copy_(torch.bincount(torch.from_numpy(ids), minlength=self.schema.id_buckets).float())
        combos = combination_bucket(torch.from_numpy(shown), torch.from_numpy(shown >= 0), self.schema.combination_buckets)
        self.combination_counts.copy_(torch.bincount(combos, minlength=self.schema.combination_buckets).float())

    @torch.no_grad()
    def scale_network(self, weight: float) -> None:
        """Multiply the network's part of the click logit by `weight` (phi's wide weights and the output of its
        deep part), and pull the MIL pooling toward uniform by as much; weight 0 leaves the wide part alone."""
        for layer in (self.phi.element, self.phi.context, self.phi.pair, self.phi.deep[-1], self.pool[-1]):
            layer.weight.mul_(weight)
            if layer.bias is not None:
                layer.bias.mul_(weight)

    def silence_network(self) -> None:
        """The model as its wide part alone (genco.train's wide start)."""
        self.scale_network(0.0)

    def encode(self, batch: Batch) -> Encoded:
        context_in = torch.cat([batch.user, batch.ad], dim=1)  # (B, U + A)
        appeal = self.appeal(context_in).squeeze(1)  # (B,)
        ad = batch.user.new_zeros(batch.size, self.config.context_dim)
        if self.config.ad_ids:
            ad = self.ad_embedding(batch.ad_bucket)  # (B, C)
            appeal = appeal + self.ad_appeal(batch.ad_bucket).squeeze(1)
        h_in = torch.cat([context_in, ad], dim=1)
        h = self.context(h_in) + self.context_mlp(h_in)  # (B, C)
        e = torch.cat([proj(f) for proj, f in zip(self.feature_proj, batch.features)], dim=1)  # (B, T, d)
        e = e + self.component(batch.slot_component)
        if self.config.id_vectors:
            trust = shrinkage_trust(self.id_counts[batch.element_bucket], self.config.id_shrinkage)  # (B, T)
            e = e + trust[..., None] * self.id_vector(batch.element_bucket)  # (B, T, d)
        if self.config.element_ids:
            effect = self.element_effect(batch.element_bucket).squeeze(-1)  # (B, T)
        else:
            effect = torch.zeros(batch.mask.shape)
        if self.config.feature_effects:
            effect = effect + self.feature_terms(batch.user, batch.features)
        if self.user_id_effect is not None:
            effect = effect + (self.user_id_effect[batch.element_bucket] * batch.user[:, None, :]).sum(-1)  # (B, T, U) -> (B, T)
        return Encoded(h=h, appeal=appeal, e=e, effect=effect, mask=batch.mask, slices=batch.slices, bucket=batch.element_bucket,
                       slot_component=batch.slot_component)

    def feature_terms(self, user: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """The refitted wide term of every slot: [1, user] . W_m . features. user (B, U), features[m] (B, N_m, F_m)
        -> (B, T)."""
        context = torch.cat([torch.ones(user.shape[0], 1), user], dim=1)  # (B, 1 + U)
        return torch.cat([torch.einsum("bnf,cf,bc->bn", f, self.feature_effect[m, :, :f.shape[-1]], context)
                          for m, f in enumerate(features)], dim=1)

    # -- generator -----------------------------------------------------------------------------------------------

    def policy_scores(self, enc: Encoded, generator_only: bool = False) -> torch.Tensor:
        """Preference score of every candidate, all components in one pass: (B, T).

        generator_only: gradients reach the generator's own parameters (its attention, policy head and
        sharpness) and not phi or the encoders, which the reward model uses too. The policy gradient trains this way: if it
        could move phi it would raise the very rewards it is chasing (held-out log loss then diverges).
        """
        if generator_only:
            enc = enc.detached()
        a = self.generator_attention(enc.e, enc.mask, enc.slot_component, enc.h)  # (B, T, d)
        h = enc.h.unsqueeze(1).expand(-1, enc.e.shape[1], -1)  # (B, T, C)
        return self.generator_score(h, enc.e, a, enc.effect, generator_only)

    def generator_score(self, h: torch.Tensor, e: torch.Tensor, a: torch.Tensor, effect: torch.Tensor,
                        generator_only: bool) -> torch.Tensor:
        """phi (frozen when generator_only) plus the generator's own head: (..., C), (..., d), (..., d), (...) -> (...)"""
        if generator_only:
            frozen = {name: p.detach() for name, p in self.phi.named_parameters()}
            training, self.phi.training = self.phi.training, False  # phi is a fixed function here: no dropout
            shared = functional_call(self.phi, frozen, (h, e, a, effect))
            self.phi.train(training)
        else:
            shared = self.phi(h, e, a, effect)
        return shared + self.policy_head(torch.cat([h, e, a], dim=-1)).squeeze(-1)

    def generate(self, enc: Encoded, k: int, generator: Randomness = None, *, with_greedy: bool = False,
                 epsilon: float = 0.0, generator_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """K sampled combinations per row and their log-probabilities: (B, K, M) positions (-1 absent), (B, K).

        Non-autoregressive: pi is computed for every component at once and the K samples are drawn in
        parallel. with_greedy: the most likely combination comes first, then the K samples (B, 1 + K, M).
        epsilon: mix pi with a uniform choice per component (explore mode); probabilities are the mixture's.
        """
        log_pi = self.log_pi(self.policy_scores(enc, generator_only), enc)  # (B, T)
        log_pi = mix_uniform(log_pi, enc, epsilon)
        combos = self.sample(log_pi.detach(), enc, k, generator)
        if with_greedy:
            combos = torch.cat([self.greedy(log_pi, enc)[:, None, :], combos], dim=1)
        return combos, self.combo_log_pi(log_pi, combos, enc)

    def log_pi(self, scores: torch.Tensor, enc: Encoded) -> torch.Tensor:
        """log pi(j | m): a masked log-softmax within each component's slots. (B, T); -inf on padding."""
        parts = []
        sharpness = self.log_sharpness.exp()
        for m, (a, b) in enumerate(enc.slices):
            valid = enc.mask[:, a:b]
            s = (sharpness[m] * scores[:, a:b]).masked_fill(~valid, float("-inf"))
            absent = ~valid.any(dim=1, keepdim=True)  # rows without this component: avoid NaN
            parts.append(torch.log_softmax(s.masked_fill(absent, 0.0), dim=1).masked_fill(~valid, float("-inf")))
        return torch.cat(parts, dim=1)

    @staticmethod
    def sample(log_pi: torch.Tensor, enc: Encoded, k: int, generator: Randomness = None) -> torch.Tensor:
        """K combinations per row, every component drawn in parallel (Gumbel-max). (B, K, M) positions, -1 absent.
        `generator`: a seeded torch generator, or RequestNoise (greedy: the draws are a function of the request)."""
        B = log_pi.shape[0]
        picks = []
        for m, (a, b) in enumerate(enc.slices):
            if b == a:
                picks.append(torch.full((B, k), -1, dtype=torch.long))
                continue
            u = uniform(generator, B, k, b - a, stream=m)  # (B, K, N_m)
            noisy = log_pi[:, None, a:b] - torch.log(-torch.log(u))  # (B, K, N_m)
            present = enc.mask[:, a:b].any(dim=1)  # (B,)
            picks.append(torch.where(present[:, None], noisy.argmax(dim=-1), -1))
        return torch.stack(picks, dim=-1)

    @staticmethod
    def greedy(log_pi: torch.Tensor, enc: Encoded) -> torch.Tensor:
        """The most likely element of every component: (B, M) positions, -1 absent."""
        picks = []
        for a, b in enc.slices:
            if b == a:
                picks.append(torch.full((log_pi.shape[0],), -1, dtype=torch.long))
                continue
            present = enc.mask[:, a:b].any(dim=1)
            picks.append(torch.where(present, log_pi[:, a:b].argmax(dim=1), -1))
        return torch.stack(picks, dim=-1)

    @staticmethod
    def slots(combos: torch.Tensor, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions within components (..., M) -> slot indices (..., M) and presence (..., M)."""
        starts = torch.tensor([a for a, _ in enc.slices], dtype=torch.long)
        present = combos >= 0
        slot = (starts + combos.clamp(min=0)).clamp(max=max(enc.e.shape[1] - 1, 0))
        return slot, present

    @classmethod
    def combo_log_pi(cls, log_pi: torch.Tensor, combos: torch.Tensor, enc: Encoded) -> torch.Tensor:
        """log pi of whole combinations: (B, K, M) -> (B, K), the sum over present components."""
        B, K, M = combos.shape
        slot, present = cls.slots(combos, enc)
        picked = log_pi.gather(1, slot.view(B, K * M)).view(B, K, M)
        return picked.masked_fill(~present, 0.0).sum(dim=-1)

    # -- multi-instance reward model -----------------------------------------------------------------------------

    @classmethod
    def bags(cls, enc: Encoded, combos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The chosen elements of combinations (B, K, M): embeddings (B, K, M, d), slots and presence (B, K, M)."""
        B, K, M = combos.shape
        slot, present = cls.slots(combos, enc)
        e = enc.e.gather(1, slot.view(B, K * M, 1).expand(-1, -1, enc.e.shape[-1])).view(B, K, M, -1)
        return e, slot, present

    def reward(self, enc: Encoded, combos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Score combinations (B, K, M) -> creative logit (B, K), instance scores (B, K, M), presence (B, K, M)."""
        terms = self.bag_terms(enc, combos)
        return terms.creative, terms.instance, terms.present

    def bag_terms(self, enc: Encoded, combos: torch.Tensor) -> BagTerms:
        """The reward model's pass over combinations (B, K, M), with the pieces the creative logit is linear in."""
        B, K, M = combos.shape
        d = enc.e.shape[-1]
        e, slot, present = self.bags(enc, combos)  # (B, K, M, d), (B, K, M), (B, K, M)
        a = self.bag_attention(e.view(B * K, M, d), present.view(B * K, M), torch.arange(M), enc.h).view(B, K, M, d)  # among the chosen
        h = enc.h[:, None, None, :].expand(-1, K, M, -1)  # (B, K, M, C)
        effect = enc.effect.gather(1, slot.view(B, K * M)).view(B, K, M)
        s = self.phi(h, e, a, effect)  # (B, K, M) instance scores from the shared phi
        if self.config.attention:
            pool = self.pool(torch.cat([e, a], dim=-1)).squeeze(-1).masked_fill(~present, float("-inf"))
            alpha = torch.softmax(pool, dim=-1).nan_to_num(0.0) * present.sum(dim=-1, keepdim=True)  # mean 1
        else:
            alpha = present.float()  # uniform: the bag logit is the plain sum of instance scores
        alpha = alpha.masked_fill(~present, 0.0)
        creative = (alpha * s).masked_fill(~present, 0.0).sum(dim=-1)  # (B, K)
        bucket = enc.bucket.gather(1, slot.view(B, K * M)).view(B, K, M)
        combination, trust, pair, pair_present = None, None, None, None
        if self.config.combination_effects:
            combination = combination_bucket(bucket, present, self.schema.combination_buckets)  # (B, K)
            trust = shrinkage_trust(self.combination_counts[combination], self.config.combination_shrinkage)
            creative = creative + trust * self.combination_effect(combination).squeeze(-1)
        if self.pair_effect is not None:
            pair, pair_present = pair_buckets(bucket, present, self.schema.pair_buckets)  # (B, K, P)
            creative = creative + (self.pair_effect[pair] * pair_present).sum(dim=-1)
        return BagTerms(creative, s, present, alpha, bucket, combination, trust, pair, pair_present)

    def click_logit(self, enc: Encoded, combos: torch.Tensor) -> torch.Tensor:
        """Full P(click) logit of combinations (B, K, M): appeal + creative part. (B, K)"""
        creative, _, _ = self.reward(enc, combos)
        return enc.appeal[:, None] + creative
