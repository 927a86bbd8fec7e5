"""The model folder: weights (safetensors), and the config and feature schema needed to serve them.

    MODEL/model.safetensors   the weights
    MODEL/genco.json          format version, feature schema, model and training config, held-out metrics
    MODEL/history.json        per-epoch training and held-out figures
    MODEL/training_curve.png  the same, as a picture
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genco.autoregressive import AutoregressiveGenCO
from genco.data import FeatureSchema
from genco.ensemble import RewardEnsemble
from genco.errors import GencoInputError
from genco.files import atomic_write_json, output_folder
from genco.model import GenCO, ModelConfig

FORMAT = "genco-model"
VERSION = 2  # 2: id vectors and their counts


def check_model_folder(directory: str | Path) -> None:
    """Refuse, before any training, a --out that cannot become a model folder (a file, or under one)."""
    directory = Path(directory)
    for place in (directory, *directory.parents):
        if place.exists():
            if not place.is_dir():
                raise GencoInputError(f"--out {directory}: {place} exists and is not a folder")
            if not os.access(place, os.W_OK):
                raise GencoInputError(f"--out {directory}: {place} is not writable")
            return


def save_model(model: torch.nn.Module, directory: str | Path, extra: dict[str, Any]) -> None:
    """Write the weights and metadata; each file is written atomically, genco.json last (it marks completeness)."""
    check_model_folder(directory)
    directory = output_folder(directory, "--out")
    tmp = directory / ".model.safetensors.tmp"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    tmp.replace(directory / "model.safetensors")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "kind": type(model).__name__,
        "schema": model.schema.to_dict(),
        "model_config": model.config.to_dict(),
        **extra,
    }
    if isinstance(model, RewardEnsemble):
        meta["ensemble"] = {"members": len(model.members), "member_kind": type(model.primary).__name__}
    atomic_write_json(directory / "genco.json", meta, indent=2)


def read_meta(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise GencoInputError(f"{directory}: no such model folder")
    try:
        meta = json.loads((directory / "genco.json").read_text())
    except FileNotFoundError:
        raise GencoInputError(f"{directory}: not a genco model folder (genco.json is missing)") from None
    except ValueError as exc:
        raise GencoInputError(f"{directory}/genco.json: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GencoInputError(f"{directory}/genco.json: not a genco model description")
    if meta.get("version") != VERSION:
        raise GencoInputError(f"{directory}: model format version {meta.get('version')}, this genco reads {VERSION}")
    return meta


def load_model(directory: str | Path) -> tuple[GenCO | RewardEnsemble, dict[str, Any]]:
    """The model in eval mode and its metadata; a clear GencoInputError for anything wrong with the folder."""
    directory = Path(directory)
    meta = read_meta(directory)
    try:
        schema = FeatureSchema(**meta["schema"])
        config = ModelConfig(**meta["model_config"])
        kind = meta.get("kind", "GenCO")
        if kind == "RewardEnsemble":
            ensemble = meta["ensemble"]
            model = RewardEnsemble.untrained(schema, config, int(ensemble["members"]), MODEL_KINDS[ensemble["member_kind"]])
        else:
            model = MODEL_KINDS[kind](schema, config)
    except (KeyError, TypeError, ValueError) as exc:
        raise GencoInputError(f"{directory}/genco.json: incomplete or unknown model description ({exc})") from None
    try:
        state = load_file(str(directory / "model.safetensors"))
    except FileNotFoundError:
        raise GencoInputError(f"{directory}: model.safetensors is missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise GencoInputError(f"{directory}/model.safetensors: unreadable ({exc})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise GencoInputError(f"{directory}/model.safetensors: weights do not fit genco.json ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, meta


MODEL_KINDS: dict[str, type[GenCO]] = {"GenCO": GenCO, "AutoregressiveGenCO": AutoregressiveGenCO}
