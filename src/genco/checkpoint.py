"""The model folder: weights (safetensors), and the config and feature schema needed to serve them.

    MODEL/model.safetensors   the weights, and in its header the description below: the one file a server reads
    MODEL/genco.json          format version, feature schema, model and training config, held-out metrics
    MODEL/history.json        per-epoch training and held-out figures
    MODEL/training_curve.png  the same, as a picture

Why the description travels inside the weights file: `genco serve` reloads a model when `genco train --out`
writes a new one into the folder it serves. Each file is replaced atomically (temporary name, then rename),
but two files cannot be replaced together, so a server reading weights and genco.json apart could pair new
weights with an old description. It reads model.safetensors alone, once: what it loads is one version, whole.
Its version is the folder's name and the first 12 hex digits of the file's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_weights, save_file

from genco.autoregressive import AutoregressiveGenCO
from genco.data import FeatureSchema
from genco.ensemble import RewardEnsemble
from genco.errors import GencoInputError
from genco.files import atomic_write_json, output_folder
from genco.model import GenCO, ModelConfig

FORMAT = "genco-model"
VERSION = 5  # 2: id vectors and their counts; 3: the description also in the weights file's header;
#             4: the wide part's feature and pair effects (ModelConfig.feature_effects, pair_effects);
#             5: its user x element-id effects (ModelConfig.user_id_effects)
READABLE = (2, 3, 4, 5)
#: The ModelConfig options each version introduced: a folder of an earlier version had them off.
INTRODUCED = {4: ("feature_effects", "pair_effects"), 5: ("user_id_effects",)}


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
    tmp = directory / f".model.safetensors.{os.getpid()}.tmp"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"genco": json.dumps(meta)})
    tmp.replace(directory / "model.safetensors")
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
    return _checked(meta, directory / "genco.json")


def _checked(meta: Any, source: Path) -> dict[str, Any]:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GencoInputError(f"{source}: not a genco model description")
    if meta.get("version") not in READABLE:
        raise GencoInputError(f"{source.parent}: model format version {meta.get('version')}, this genco reads "
                              f"{', '.join(map(str, READABLE))}")
    return meta


def _header_meta(raw: bytes, source: Path) -> dict[str, Any] | None:
    """The description in a safetensors header (8 bytes of little-endian length, then JSON), or None (version 2)."""
    try:
        (length,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + length])
        text = header.get("__metadata__", {}).get("genco")
        return None if text is None else _checked(json.loads(text), source)
    except (struct.error, ValueError, AttributeError):
        raise GencoInputError(f"{source}: unreadable (not a safetensors file)") from None


def load_model(directory: str | Path) -> tuple[GenCO | RewardEnsemble, dict[str, Any]]:
    """The model in eval mode and its description (with `model_version`); a clear GencoInputError for anything
    wrong with the folder. The weights file is read once, and its own header describes it (see the module)."""
    directory = Path(directory)
    weights = directory / "model.safetensors"
    if not directory.is_dir():
        raise GencoInputError(f"{directory}: no such model folder")
    try:
        raw = weights.read_bytes()
    except FileNotFoundError:
        raise GencoInputError(f"{directory}: model.safetensors is missing") from None
    except OSError as exc:
        raise GencoInputError(f"{weights}: unreadable ({exc.strerror})") from None
    meta = _header_meta(raw, weights) or read_meta(directory)
    meta = {**meta, "model_version": f"{directory.resolve().name}@{hashlib.sha256(raw).hexdigest()[:12]}"}
    try:
        schema = FeatureSchema(**meta["schema"])
        older = {option: False for version, options in INTRODUCED.items() if meta["version"] < version for option in options}
        config = ModelConfig(**{**older, **meta["model_config"]})
        kind = meta.get("kind", "GenCO")
        if kind == "RewardEnsemble":
            ensemble = meta["ensemble"]
            model = RewardEnsemble.untrained(schema, config, int(ensemble["members"]), MODEL_KINDS[ensemble["member_kind"]])
        else:
            model = MODEL_KINDS[kind](schema, config)
    except (KeyError, TypeError, ValueError) as exc:
        raise GencoInputError(f"{directory}: incomplete or unknown model description ({exc})") from None
    try:
        state = load_weights(raw)
    except (SafetensorError, ValueError) as exc:
        raise GencoInputError(f"{weights}: unreadable ({exc})") from None
    if meta["version"] < 4:  # the feature-effect buffer, zero in a model that does not use it, came with version 4
        state |= {key: value for key, value in model.state_dict().items() if key.endswith("feature_effect") and key not in state}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise GencoInputError(f"{weights}: weights do not fit their description ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, meta


MODEL_KINDS: dict[str, type[GenCO]] = {"GenCO": GenCO, "AutoregressiveGenCO": AutoregressiveGenCO}
