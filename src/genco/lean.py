"""The greedy answer of the `best-of-k` and `argmax` modes as one tensor program, for serving and export.

Why apart from genco.model. Training needs the model's flexible layout (each component padded to its own
width, members as separate modules, Python loops over components). Serving one request at a time pays for
each of those small operations, and an ad server that is not Python cannot run them at all. `LeanGreedy`
computes the same answer from a grid layout, every component padded to one width N, so that "within a
component" is the last axis and no loop over components or elements remains; the ensemble's members are
stacked along a leading axis E, so each layer of all members is one batched matmul. The program is a plain
function of tensors, so it exports to ONNX (genco.export) unchanged.

Shapes: B requests, M components, N candidates per component (padded), K samples, E reward models, d element
width, C context width, H heads.

Inputs (see `grid_inputs`; LeanGreedy.input_names gives those a model reads, in order): user (B, U), ad (B, A), ad_bucket (B,), element_bucket (B, M, N), mask (B, M, N),
noise (B, K, M, N) request-keyed uniforms (genco.noise), extra (B, X, M) combinations to score besides the
generator's (every combination of a request with small pools, as genco.select enumerates them; -2 on unused
ones), and features (B, M, N, F): every component's, each padded with zeros to the widest F.
Outputs: positions (B, M) within components (-1 absent) and the click logit (B,) of the answer.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch
from torch import nn

from genco.data import Batch, FeatureSchema
from genco.ensemble import RewardEnsemble
from genco.model import GenCO, combination_bucket, pair_buckets, shrinkage_trust
from genco.noise import RequestNoise

#: Fill for masked attention logits: finite, so that a set with no valid item gives a finite softmax that
#: the mask then zeroes (the model's -inf gives NaN there, which it replaces by 0: the same weights).
_MASKED = -1e30

INPUTS = ("user", "ad", "ad_bucket", "element_bucket", "mask", "noise", "extra")


class GreedyProgram(Protocol):
    """LeanGreedy (torch) or genco.export.OnnxGreedy (ONNX Runtime): grid inputs -> positions (B, M), logit (B,)."""

    def answer(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...


class StackedLinear(nn.Module):
    """The same nn.Linear of every member, stacked: x (E, ..., in) -> (E, ..., out) in one batched matmul."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.inputs, self.outputs = layers[0].in_features, layers[0].out_features
        self.register_buffer("weight", torch.stack([layer.weight.detach().t() for layer in layers]))  # (E, in, out)
        bias = [layer.bias.detach() for layer in layers] if layers[0].bias is not None else None
        self.register_buffer("bias", torch.stack(bias)[:, None, :] if bias else None)  # (E, 1, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        if self.inputs == 0:  # no inputs (`user: []` and no ad features): the bias alone
            y = torch.zeros(len(self.weight), 1, self.outputs) if self.bias is None else self.bias
            return y.view(len(y), *([1] * (len(shape) - 1)), self.outputs).expand(*shape, self.outputs)
        x = x.reshape(shape[0], -1, self.inputs)
        y = torch.bmm(x, self.weight) if self.bias is None else torch.baddbmm(self.bias, x, self.weight)  # (E, rows, out)
        return y.reshape(*shape, self.outputs)


_SUBNORMAL = np.array([1e-45], dtype=np.float32)


@contextmanager
def subnormals_flushed():
    """Within: floats below 1e-38 are computed as zero on this thread (the CPU's flush-to-zero and
    denormals-are-zero modes); after: as before. A softmax over attention logits spread wide gives such
    subnormal floats, which cost the CPU about a hundred cycles each (ONNX Runtime's softmax over (2, 90, 90)
    logits took 10x as long); no answer can depend on them. Scoped, because the mode belongs to the thread,
    and the caller's own arithmetic must keep its subnormals."""
    already = (_SUBNORMAL * np.float32(1.0))[0] == 0
    if not already:
        torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if not already:
            torch.set_flush_denormal(False)


def short_softmax(x: torch.Tensor) -> torch.Tensor:
    """torch.softmax over the last axis, for a short one (the M components of a bag): the fused kernels of
    torch and ONNX Runtime walk such rows one at a time, and took 3-4x as long as these elementwise passes
    (16 against 5 ms on (3, 256, 17, 2, 6, 6), one thread). Equal to it within float rounding."""
    z = (x - x.amax(dim=-1, keepdim=True)).exp()
    return z / z.sum(dim=-1, keepdim=True)


def _stack(tables: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach() for t in tables])


def features_in_one(members: list[GenCO], schema: FeatureSchema, wide_terms: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every member's feature projection (d outputs) and refitted wide term (W = 1 + U outputs, where
    `wide_terms`) of every component as one weight (M, F, E (d + W)) and bias (M, 1, E (d + W)), each component
    padded to the widest feature vector F with zero rows (a component without features: all zero). One
    batched matmul then encodes every component's features, where a loop over components made a handful of
    small operations per component (a batch-1 answer is made of a few hundred such)."""
    M, F = len(schema.components), max(schema.feature_dims.values(), default=0)
    d, W = members[0].component.weight.shape[1], (1 + schema.user_dim) if wide_terms else 0
    weight, bias = torch.zeros(M, F, len(members), d + W), torch.zeros(M, 1, len(members), d + W)
    for e, member in enumerate(members):
        for m, name in enumerate(schema.components):
            width = schema.feature_dims[name]
            if width:
                projection = member.feature_proj[m]
                weight[m, :width, e, :d], bias[m, 0, e, :d] = projection.weight.detach().t(), projection.bias.detach()
                if W:
                    weight[m, :width, e, d:] = member.feature_effect[m, :, :width].t()
    return weight.reshape(M, F, -1), bias.reshape(M, 1, -1)


class LeanGreedy(nn.Module):
    """Greedy best-of-k (or argmax with K = 0) of a GenCO or RewardEnsemble, in the grid layout. Inference only:
    the weights are copied at construction (a model trained further needs a new LeanGreedy)."""

    def __init__(self, model: GenCO | RewardEnsemble):
        super().__init__()
        if not self.supports(model):
            raise TypeError("the lean path serves GenCO's own generator (not a variant's)")
        members = list(model.members) if isinstance(model, RewardEnsemble) else [model]
        self.config, self.schema = model.config, model.schema
        self.components = len(self.schema.components)
        first = members[0]  # its generator proposes (its encoder is the stacked encoders' member 0)
        self.generator_attention = copy.deepcopy(first.generator_attention).eval()
        self.generator_phi = copy.deepcopy(first.phi).eval()
        self.policy_head = copy.deepcopy(first.policy_head).eval()
        self.register_buffer("sharpness", first.log_sharpness.detach().exp()[:, None])  # (M, 1)
        c = self.config
        lin = lambda get: StackedLinear([get(member) for member in members])  # noqa: E731
        # context encoder and appeal
        self.context, self.context_in, self.context_out = lin(lambda m: m.context), lin(lambda m: m.context_mlp[0]), lin(lambda m: m.context_mlp[2])
        self.appeal = lin(lambda m: m.appeal)
        self.register_buffer("ad_embedding", _stack([m.ad_embedding.weight for m in members]))  # (E, ad buckets, C)
        self.register_buffer("ad_appeal", _stack([m.ad_appeal.weight[:, 0] for m in members]))  # (E, ad buckets)
        # element encoder
        self.feature_width = max(self.schema.feature_dims.values(), default=0)
        if self.feature_width:
            weight, bias = features_in_one(members, self.schema, c.feature_effects)
            self.register_buffer("feature_weight", weight)  # (M, F, E (d + W))
            self.register_buffer("feature_bias", bias)  # (M, 1, E (d + W))
        self.register_buffer("component", _stack([m.component.weight for m in members]))  # (E, M, d)
        self.register_buffer("element_effect", _stack([m.element_effect.weight[:, 0] for m in members]))  # (E, buckets)
        user_ids = first.user_id_effect is not None
        self.register_buffer("user_id_effect", _stack([m.user_id_effect for m in members]) if user_ids else None)  # (E, buckets, U)
        trust = [shrinkage_trust(m.id_counts, c.id_shrinkage) for m in members]
        self.register_buffer("id_vector", _stack([t[:, None] * m.id_vector.weight for t, m in zip(trust, members)]))  # (E, buckets, d)
        # reward model: bag attention, phi, pooling, combination effects
        self.qkv, self.out = lin(lambda m: m.bag_attention.qkv), lin(lambda m: m.bag_attention.out)
        self.register_buffer("pair_bias", _stack([m.bag_attention.pair_bias for m in members]))  # (E, H, M, M)
        self.context_query = lin(lambda m: m.bag_attention.context_query) if c.context_attention else None
        self.phi_element, self.phi_context, self.phi_pair = lin(lambda m: m.phi.element), lin(lambda m: m.phi.context), lin(lambda m: m.phi.pair)
        self.phi_deep_in, self.phi_deep_out = lin(lambda m: m.phi.deep[0]), lin(lambda m: m.phi.deep[3])
        self.pool_in, self.pool_out = lin(lambda m: m.pool[0]), lin(lambda m: m.pool[2])
        effect = [shrinkage_trust(m.combination_counts, c.combination_shrinkage) * m.combination_effect.weight[:, 0] for m in members]
        self.register_buffer("combination_effect", _stack(effect))  # (E, combination buckets), trust included
        pairs = first.pair_effect is not None
        self.register_buffer("pair_effect", _stack([m.pair_effect for m in members]) if pairs else None)  # (E, pair buckets)

    @staticmethod
    def supports(model) -> bool:
        members = list(model.members) if isinstance(model, RewardEnsemble) else [model]
        return all(type(member) is GenCO for member in members)

    # -- encoders ------------------------------------------------------------------------------------------------

    def encode(self, inputs: dict[str, torch.Tensor]):
        """-> h (E, B, C), appeal (E, B), e (E, B, M, N, d), effect (E, B, M, N)."""
        E = self.ad_embedding.shape[0]
        ad_bucket, element_bucket = inputs["ad_bucket"], inputs["element_bucket"]
        B, M, N = element_bucket.shape
        parts = [inputs[name] for name in ("user", "ad") if name in inputs]
        context_in = (torch.cat(parts, dim=1) if parts else torch.zeros(B, 0))[None].expand(E, -1, -1)  # (E, B, U + A)
        appeal = self.appeal(context_in)[..., 0]  # (E, B)
        if self.config.ad_ids:
            ad_vector = self.ad_embedding[:, ad_bucket]  # (E, B, C)
            appeal = appeal + self.ad_appeal[:, ad_bucket]
        else:
            ad_vector = torch.zeros(E, B, self.config.context_dim)
        h_in = torch.cat([context_in, ad_vector], dim=2)
        h = self.context(h_in) + self.context_out(torch.relu(self.context_in(h_in)))  # (E, B, C)
        d = self.component.shape[-1]
        e = self.component[:, None, :, None, :].expand(E, B, M, N, d)  # (E, B, M, N, d)
        effect = self.element_effect[:, element_bucket] if self.config.element_ids else torch.zeros(E, B, M, N)  # (E, B, M, N)
        if self.feature_width:  # every component's projection and wide term in one batched matmul
            F = self.feature_width
            flat = inputs["features"].transpose(0, 1).reshape(M, B * N, F)  # (M, B N, F)
            out = torch.baddbmm(self.feature_bias, flat, self.feature_weight).view(M, B, N, E, -1).permute(3, 1, 0, 2, 4)  # (E, B, M, N, d + W)
            e = e + out[..., :d]
            if out.shape[-1] > d:
                wide = torch.cat([torch.ones(B, 1), inputs["user"]], dim=1) if "user" in inputs else torch.ones(B, 1)  # (B, W = 1 + U)
                effect = effect + (out[..., d:] * wide[None, :, None, None, :]).sum(-1)
        if self.config.id_vectors:
            e = e + self.id_vector[:, element_bucket]
        if self.user_id_effect is not None:
            effect = effect + torch.einsum("ebmnu,bu->ebmn", self.user_id_effect[:, element_bucket], inputs["user"])
        return h, appeal, e, effect

    # -- generator (member 0) ------------------------------------------------------------------------------------

    def log_pi(self, h, e, effect, mask, present):
        """h (B, C), e (B, M, N, d), effect (B, M, N), mask (B, M, N), present (B, M) -> log pi (B, M, N), -inf on padding."""
        B, M, N, d = e.shape
        slots = e.reshape(B, M * N, d)
        a = self.generator_attend(slots, mask.reshape(B, M * N), present, h, N)  # (B, T, d)
        hs = h[:, None, :].expand(-1, M * N, -1)  # (B, T, C)
        scores = self.generator_phi(hs, slots, a, effect.reshape(B, M * N)) + self.policy_head(torch.cat([hs, slots, a], dim=-1))[..., 0]
        scores = (self.sharpness * scores.view(B, M, N)).masked_fill(~mask, float("-inf"))
        absent = ~present[:, :, None]  # (B, M, 1): rows without the component, no NaN
        return torch.log_softmax(scores.masked_fill(absent, 0.0), dim=2).masked_fill(~mask, float("-inf"))

    def generator_attend(self, x, mask, present, h, N):
        """genco.model.CrossAttention of the generator over a grid of T = M N slots: x (B, T, d), mask (B, T),
        present (B, M), h (B, C) -> (B, T, d). The same weights and values, in fewer operations: the
        own-component and padding masks are additive biases (a finite _MASKED, so no NaN to clean; rows with no
        partner are zeroed after), the component-pair table (H, M, M) is masked before it is spread over the
        slots (a constant the export folds), and the scale is applied to the queries (a power of two for the
        usual head widths, so exact)."""
        attention = self.generator_attention
        B, T, d = x.shape
        M = T // N
        if not attention.enabled:
            return torch.zeros_like(x)
        heads = attention.heads
        q, k, v = attention.qkv(x).view(B, T, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # (B, H, T, dh) each
        if attention.context_query is not None:
            q = q + attention.context_query(h).view(B, heads, 1, d // heads)
        own = torch.eye(M, dtype=torch.bool)  # (M, M): partners are in the other components
        pairs = (attention.pair_bias if attention.learned else torch.zeros(heads, M, M)).masked_fill(own, _MASKED)  # (H, M, M)
        bias = pairs[:, :, None, :, None].expand(heads, M, N, M, N).reshape(heads, T, T) + torch.where(mask, 0.0, _MASKED)[:, None, None, :]
        logits = (q * (d // heads) ** -0.5) @ k.transpose(-1, -2) + bias if attention.learned else bias  # (B, H, T, T)
        partnered = (present.float() @ (~own).float()) > 0  # (B, M): another component has a candidate
        z = torch.softmax(logits, dim=-1) @ v * partnered[:, None, :, None, None].expand(B, 1, M, N, 1).reshape(B, 1, T, 1)  # (B, H, T, dh)
        return attention.out(z.transpose(1, 2).reshape(B, T, d))

    # -- reward model (all members) ------------------------------------------------------------------------------

    def bag_attention(self, x, present, h):
        """x (E, B, K, M, d): K bags per request, present (B, K, M), h (E, B, C) -> attention vectors (E, B, K, M, d)."""
        E, B, K, M, d = x.shape
        heads = self.pair_bias.shape[1]
        if not self.config.cross_component:
            return torch.zeros_like(x)
        q, k, v = self.qkv(x).view(E, B, K, M, 3, heads, d // heads).permute(4, 0, 1, 2, 5, 3, 6)  # (E, B, K, H, M, dh) each
        if self.context_query is not None:
            q = q + self.context_query(h).view(E, B, 1, heads, 1, d // heads)
        if self.config.attention:
            logits = q @ k.transpose(-1, -2) / math.sqrt(d // heads) + self.pair_bias[:, None, None]  # (E, B, K, H, M, M)
        else:
            logits = torch.zeros(E, B, K, heads, M, M)
        valid = present[None, :, :, None, None, :] & ~torch.eye(M, dtype=torch.bool)  # (1, B, K, 1, M, M): other components
        weights = short_softmax(logits.masked_fill(~valid, _MASKED)) * valid
        return self.out((weights @ v).transpose(3, 4).reshape(E, B, K, M, d))

    def reward(self, h, e, effect, element_bucket, combos):
        """Creative logits (B, K) of combinations (B, K, M), the members' mean. h (E, B, C), e (E, B, M, N, d)."""
        E, B, M, N, d = e.shape
        K = combos.shape[1]
        present = combos >= 0  # (B, K, M)
        slot = (torch.arange(M) * N + combos.clamp(min=0)).reshape(B, K * M)  # (B, KM) into the flat grid
        bag = e.reshape(E, B, M * N, d).gather(2, slot[None, :, :, None].expand(E, -1, -1, d)).view(E, B, K, M, d)
        bag_effect = effect.reshape(E, B, M * N).gather(2, slot[None].expand(E, -1, -1)).view(E, B, K, M)
        a = self.bag_attention(bag, present, h)  # (E, B, K, M, d)
        hb = h[:, :, None, None, :]  # (E, B, 1, 1, C)
        wide = self.phi_element(bag)[..., 0] + (self.phi_context(h)[:, :, None, None, :] * bag).sum(-1) + (self.phi_pair(bag) * a).sum(-1)
        deep_in = torch.cat([hb.expand(-1, -1, K, M, -1), bag, a], dim=-1)  # (E, B, K, M, C + 2d)
        s = wide + self.phi_deep_out(torch.relu(self.phi_deep_in(deep_in)))[..., 0] + bag_effect  # (E, B, K, M) instance scores
        if self.config.attention:
            pool = self.pool_out(torch.tanh(self.pool_in(torch.cat([bag, a], dim=-1))))[..., 0]  # (E, B, K, M)
            alpha = short_softmax(pool.masked_fill(~present, _MASKED)) * present * present.sum(-1, keepdim=True)
        else:
            alpha = present.float().expand(E, -1, -1, -1)
        creative = (alpha * s).masked_fill(~present, 0.0).sum(dim=-1)  # (E, B, K)
        buckets = element_bucket.reshape(B, M * N).gather(1, slot).view(B, K, M)
        if self.config.combination_effects:
            which = combination_bucket(buckets, present, self.schema.combination_buckets)  # (B, K)
            creative = creative + self.combination_effect[:, which]
        if self.pair_effect is not None:
            pair, both = pair_buckets(buckets, present, self.schema.pair_buckets)  # (B, K, P)
            creative = creative + (self.pair_effect[:, pair] * both).sum(dim=-1)
        return creative.mean(dim=0)  # (B, K)

    # -- the answer ----------------------------------------------------------------------------------------------

    def forward(self, *tensors: torch.Tensor):
        """The inputs named by input_names(), in that order -> positions (B, M) of the best of the generator's
        argmax, its K samples and the `extra` combinations (B, X, M; -2 marks an unused one), and its click
        logit (B,)."""
        inputs = dict(zip(self.input_names(), tensors))
        mask, noise, extra, element_bucket = inputs["mask"], inputs["noise"], inputs["extra"], inputs["element_bucket"]
        h, appeal, e, effect = self.encode(inputs)
        present = mask.any(dim=2)  # (B, M)
        log_pi = self.log_pi(h[0], e[0], effect[0], mask, present)  # (B, M, N)
        present = present[:, None, :]  # (B, 1, M)
        sampled = (log_pi[:, None] - torch.log(-torch.log(noise))).argmax(dim=-1)  # (B, K, M) Gumbel-max
        proposed = torch.where(present, torch.cat([log_pi.argmax(dim=-1)[:, None], sampled], dim=1), -1)  # (B, 1 + K, M)
        combos = torch.cat([proposed, extra.clamp(min=-1)], dim=1)  # (B, 1 + K + X, M)
        unused = torch.cat([torch.zeros_like(proposed[..., 0], dtype=torch.bool), (extra < -1).any(dim=2)], dim=1)
        creative = self.reward(h, e, effect, element_bucket, combos).masked_fill(unused, float("-inf"))
        value, best = creative.max(dim=1)  # (B,)
        chosen = combos.gather(1, best[:, None, None].expand(-1, 1, combos.shape[2]))[:, 0]  # (B, M)
        return chosen, appeal.mean(dim=0) + value

    def input_names(self) -> list[str]:
        """What the program reads, in order: INPUTS, except user and ad where they have no columns, and the
        features where any component has some (an empty input would get a fixed shape in an export)."""
        schema = self.schema
        empty = {"user"} if schema.user_dim == 0 else set()
        empty |= {"ad"} if schema.ad_dim == 0 else set()
        return [*(n for n in INPUTS if n not in empty), *(["features"] if self.feature_width else [])]

    @torch.inference_mode()
    def answer(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """grid_inputs(...) -> positions (B, M), click logit (B,): the program run by torch."""
        with subnormals_flushed():
            chosen, logit = self(*(torch.from_numpy(arrays[name]) for name in self.input_names()))
        return chosen.numpy(), logit.numpy()


def greedy_program(model: GenCO | RewardEnsemble, mode: str, runtime: str = "torch", threads: int = 0,
                   previous: GreedyProgram | None = None) -> GreedyProgram | None:
    """What answers `mode`'s greedy calls: a LeanGreedy (runtime torch) or its ONNX export run by ONNX Runtime
    (runtime onnx, with `threads` threads, 0 for its default; the export takes seconds the first time a
    layout is seen, genco.export.cached_export; a reload that keeps the layout reuses `previous`'s graph;
    runtime auto: onnx where the [onnx] extra is installed, else torch), or None where the full model
    answers (the search mode, whose coordinate ascent is data-dependent, and variants with a generator of
    their own)."""
    if mode == "search" or not LeanGreedy.supports(model):
        return None
    lean = LeanGreedy(model)
    if runtime == "auto":
        from genco.export import onnx_available

        runtime = "onnx" if onnx_available() else "torch"
    if runtime == "onnx":
        from genco.export import onnx_program

        return onnx_program(lean, threads, previous)
    return lean


def grid_inputs(batch: Batch, k: int, enumerate_up_to: int = 0) -> dict[str, np.ndarray]:
    """The lean program's inputs of a batch collated with one width for every component (collate(..., grid=True)).
    The noise is the request-keyed uniforms the torch path draws (the same per row whatever the batch); rows
    whose pools make at most `enumerate_up_to` combinations get every one of them as `extra`."""
    M = len(batch.slices)
    B, T = batch.mask.shape
    N = T // max(M, 1)
    features = np.zeros((B, M, N, max((f.shape[2] for f in batch.features), default=0)), dtype=np.float32)
    for m, f in enumerate(batch.features):
        features[:, m, :, :f.shape[2]] = f.numpy()
    return grid_arrays(batch.user.numpy(), batch.ad.numpy(), batch.ad_bucket.numpy(), batch.element_bucket.numpy().reshape(B, M, N),
                       batch.mask.numpy().reshape(B, M, N), features, batch.row_key, k, enumerate_up_to)


def grid_arrays(user: np.ndarray, ad: np.ndarray, ad_bucket: np.ndarray, element_bucket: np.ndarray, mask: np.ndarray,
                features: np.ndarray, row_key: np.ndarray, k: int, enumerate_up_to: int) -> dict[str, np.ndarray]:
    """The program's inputs by name from a batch's grid columns (mask and element_bucket (B, M, N), features
    (B, M, N, F)), with the request-keyed noise and the enumerated small pools: the one place both ways of
    building a batch (grid_inputs, genco.request_grid) name and complete them."""
    B, M, N = mask.shape
    draws = RequestNoise(row_key).stream_array(k, N, range(M))  # (B, K, M, N): stream m is component m
    return {"user": user, "ad": ad, "ad_bucket": ad_bucket, "element_bucket": element_bucket, "mask": mask, "noise": draws,
            "extra": every_combination(mask.sum(axis=2), enumerate_up_to), "features": features}


def every_combination(pools: np.ndarray, up_to: int | None = None) -> np.ndarray:
    """Pool sizes (B, M) -> every combination of the rows with at most `up_to` of them (None: of every row)
    (B, X, M) positions in mixed-radix order, -1 for an absent component; -2 fills the rest (rows with more,
    and the shorter rows' tail)."""
    sizes = np.maximum(pools, 1)
    total = sizes.prod(axis=1)  # (B,)
    small = total <= up_to if up_to is not None else np.ones(len(pools), dtype=bool)
    X = int(total[small].max(initial=0))
    out = np.full((len(pools), X, pools.shape[1]), -2, dtype=np.int64)
    if X:
        strides = np.cumprod(np.concatenate([np.ones((len(pools), 1), np.int64), sizes[:, :-1]], axis=1), axis=1)
        every = (np.arange(X)[None, :, None] // strides[:, None, :]) % sizes[:, None, :]  # (B, X, M) mixed radix
        every = np.where(pools[:, None, :] > 0, every, -1)
        keep = small[:, None] & (np.arange(X)[None, :] < total[:, None])  # (B, X)
        out[keep] = every[keep]
    return out
