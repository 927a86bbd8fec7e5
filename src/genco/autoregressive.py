"""An autoregressive variant of GenCO's generator, to answer the seed's open question with numbers.

Components are decoded one after another (in the schema's order, as CECS's cascade does): the candidates of
component m attend to the elements already chosen for components 1..m-1, are scored by the same phi (plus
the generator's head), and one is drawn; the next component then sees it. Everything else (encoders, the
multi-instance reward model, the losses, selection) is GenCO's own, so the comparison isolates the
generator. Cost: M sequential steps per combination instead of one parallel pass.
"""

from __future__ import annotations

import torch

from genco.model import Encoded, GenCO
from genco.noise import Randomness, uniform


class AutoregressiveGenCO(GenCO):
    def generate(self, enc: Encoded, k: int, generator: Randomness = None, *, with_greedy: bool = False,
                 epsilon: float = 0.0, generator_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Like GenCO.generate: (B, K, M) or (B, 1 + K, M) combinations and their log-probabilities."""
        if generator_only:
            enc = enc.detached()
        B, T, d = enc.e.shape
        M = len(enc.slices)
        greedy = torch.zeros(1 + k if with_greedy else k, dtype=torch.bool)
        greedy[0] = with_greedy
        R = len(greedy)  # sequences per row
        h = enc.h.repeat_interleave(R, dim=0)  # (B*R, C)
        is_greedy = greedy.repeat(B)  # (B*R,)
        chosen_e = enc.e.new_zeros(B * R, M, d)  # elements chosen so far
        chosen = torch.zeros(B * R, M, dtype=torch.bool)
        combos = torch.full((B * R, M), -1, dtype=torch.long)
        log_prob = enc.e.new_zeros(B * R)
        sharpness = self.log_sharpness.exp()
        rows = torch.arange(B * R)
        for m, (a, b) in enumerate(enc.slices):
            if b == a:
                continue
            N = b - a
            cand = enc.e[:, a:b].repeat_interleave(R, dim=0)  # (B*R, N, d)
            valid = enc.mask[:, a:b].repeat_interleave(R, dim=0)  # (B*R, N)
            effect = enc.effect[:, a:b].repeat_interleave(R, dim=0)  # (B*R, N)
            # candidates of m attend over the elements chosen so far (cross-component: never over each other)
            items = torch.cat([cand, chosen_e], dim=1)  # (B*R, N + M, d)
            items_mask = torch.cat([valid, chosen], dim=1)
            component = torch.cat([torch.full((N,), m), torch.arange(M)])
            attended = self.generator_attention(items, items_mask, component, h)[:, :N]  # (B*R, N, d)
            score = self.generator_score(h[:, None, :].expand(-1, N, -1), cand, attended, effect, generator_only)
            logits = (sharpness[m] * score).masked_fill(~valid, float("-inf"))
            present = valid.any(dim=1)  # (B*R,)
            log_p = torch.log_softmax(logits.masked_fill(~present[:, None], 0.0), dim=1)
            if epsilon > 0:
                n = valid.sum(dim=1, keepdim=True).clamp(min=1)
                log_p = ((1 - epsilon) * log_p.exp() + epsilon / n).log()
            log_p = log_p.masked_fill(~valid, float("-inf"))
            u = uniform(generator, B, R, N, stream=m).reshape(B * R, N)
            noisy = log_p.detach() - torch.log(-torch.log(u))
            pick = torch.where(is_greedy, log_p.detach().argmax(dim=1), noisy.argmax(dim=1))  # (B*R,)
            log_prob = log_prob + torch.where(present, log_p[rows, pick], 0.0)
            combos[:, m] = torch.where(present, pick, -1)
            chosen_e = chosen_e.clone()
            chosen_e[:, m] = torch.where(present[:, None], cand[rows, pick], 0.0)
            chosen = chosen.clone()
            chosen[:, m] = present
        return combos.view(B, R, M), log_prob.view(B, R)
