"""GenCO with an ensemble of multi-instance reward models: the served combination is the argmax of their mean.

Why. With a few clicks per element, one reward model's argmax is noisy: two reward models trained on the
same logs from different seeds (initialisation, batch order, held-out split) disagree on which combination
is best, and the one we serve is whatever pleases the one we have. Averaging the creative logits of a few
members, each trained apart, cancels much of that noise (deep ensembles, Lakshminarayanan et al. 2017). It
keeps the paper's method: every member is GenCO's own multi-instance reward model, and the generator (member
0's) is trained by the same policy gradient, against the ensemble's reward instead of one member's.

The ensemble answers the calls a GenCO answers (encode, generate, reward, click_logit), so training stage 2,
selection, serving and the model folder use it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genco.data import Batch, FeatureSchema
from genco.model import Encoded, GenCO, ModelConfig
from genco.noise import Randomness


@dataclass
class EnsembleEncoded:
    """One Encoded per member (their encoders differ); the request layout is shared."""

    members: list[Encoded]

    @property
    def mask(self) -> torch.Tensor:
        return self.members[0].mask

    @property
    def slices(self) -> list[tuple[int, int]]:
        return self.members[0].slices

    @property
    def appeal(self) -> torch.Tensor:
        return torch.stack([enc.appeal for enc in self.members]).mean(dim=0)  # (B,)

    def repeat_rows(self, times: int) -> EnsembleEncoded:
        return EnsembleEncoded([enc.repeat_rows(times) for enc in self.members])

    def rows(self, which) -> EnsembleEncoded:
        return EnsembleEncoded([enc.rows(which) for enc in self.members])


class RewardEnsemble(nn.Module):
    """Member 0 is a whole GenCO (generator and reward model); members 1.. contribute their reward models."""

    def __init__(self, members: list[GenCO]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least 2 reward models")
        self.schema, self.config = members[0].schema, members[0].config
        self.members = nn.ModuleList(members)

    @classmethod
    def untrained(cls, schema: FeatureSchema, config: ModelConfig, members: int, member_class: type[GenCO] = GenCO) -> RewardEnsemble:
        """An ensemble of fresh members, for loading weights into."""
        return cls([member_class(schema, config) for _ in range(members)])

    @property
    def primary(self) -> GenCO:
        """The member whose generator proposes combinations."""
        return self.members[0]

    def encode(self, batch: Batch) -> EnsembleEncoded:
        return EnsembleEncoded([member.encode(batch) for member in self.members])

    def generate(self, enc: EnsembleEncoded, k: int, generator: Randomness = None, **options) -> tuple[torch.Tensor, torch.Tensor]:
        return self.primary.generate(enc.members[0], k, generator, **options)

    def reward(self, enc: EnsembleEncoded, combos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The members' mean creative logit (B, K), mean instance scores (B, K, M), presence (B, K, M)."""
        outputs = [member.reward(e, combos) for member, e in zip(self.members, enc.members)]
        creative = torch.stack([out[0] for out in outputs]).mean(dim=0)
        instance = torch.stack([out[1] for out in outputs]).mean(dim=0)
        return creative, instance, outputs[0][2]

    def click_logit(self, enc: EnsembleEncoded, combos: torch.Tensor) -> torch.Tensor:
        creative, _, _ = self.reward(enc, combos)
        return enc.appeal[:, None] + creative  # (B, K)


def reward_models(model: GenCO | RewardEnsemble) -> list[GenCO]:
    """The reward models of a GenCO (itself) or of an ensemble (its members), in order."""
    return list(getattr(model, "members", [model]))


def member_encodings(enc: Encoded | EnsembleEncoded) -> list[Encoded]:
    """The encodings of `model.encode(batch)` that go with `reward_models(model)`, in the same order."""
    return list(getattr(enc, "members", [enc]))
