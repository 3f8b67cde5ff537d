"""Memory banks: a tree with `branching` children per node and a block per cluster per level.

A query routes from the root to a leaf and fetches one block per non-empty level. Block size at
a level is its multiplier times the per-unit size of the memory type on the anchor's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from memsim import resources, yamlio
from memsim.errors import InputError
from memsim.limits import MAX_BLOCKS_PER_LEVEL, MAX_LEVELS
from memsim.yamlio import FieldError, validate_model

MemoryType = Literal["ffn", "lora-ffn", "lora-qk", "lora-ov", "kv"]
DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp32": 4, "fp8": 1, "int8": 1}


class Anchor(BaseModel):
    """Shape of the anchor language model; `params` is its total parameter count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    layers: int = Field(ge=1, description="Transformer layers L.")
    d_model: int = Field(ge=1, description="Model dimension d.")
    d_ff: int = Field(ge=1, description="Feed-forward hidden dimension.")
    heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    params: int | None = Field(
        default=None, ge=1,
        description="Total parameters; if omitted, estimated from the shape without embeddings.",
    )
    source: str = ""

    @property
    def total_params(self) -> int:
        """Parameters of the anchor, given or estimated (attention + SwiGLU per layer)."""
        if self.params is not None:
            return self.params
        attn = 4 * self.d_model * self.heads * self.head_dim
        return self.layers * (attn + 3 * self.d_model * self.d_ff)


# L, d and total params are the paper's (arXiv 2510.02375, anchor table). d_ff, heads and
# head_dim are not published there: assumed d_ff = 4d, head_dim 64 (128 for 1.4B); they only
# matter for the LoRA and KV memory types.
ANCHORS: dict[str, Anchor] = {
    "160M": Anchor(name="160M", layers=35, d_model=512, d_ff=2048, heads=8, head_dim=64,
                   params=163_510_016, source="arXiv 2510.02375; d_ff/heads assumed"),
    "410M": Anchor(name="410M", layers=24, d_model=1024, d_ff=4096, heads=16, head_dim=64,
                   params=411_665_408, source="arXiv 2510.02375; d_ff/heads assumed"),
    "1.4B": Anchor(name="1.4B", layers=24, d_model=2048, d_ff=8192, heads=16, head_dim=128,
                   params=1_439_893_504, source="arXiv 2510.02375; d_ff/heads assumed"),
}


def unit_params(memory_type: str, anchor: Anchor) -> int:
    """Parameters of a block with multiplier 1 (the paper's c0 for FFN memories)."""
    L, d = anchor.layers, anchor.d_model
    hd = anchor.heads * anchor.head_dim
    if memory_type == "ffn":
        return 3 * L * d
    if memory_type == "lora-ffn":
        return 3 * L * (d + anchor.d_ff)
    if memory_type in ("lora-qk", "lora-ov"):
        return 2 * L * (d + hd)
    if memory_type == "kv":
        return 2 * L * hd
    raise ValueError(memory_type)


@dataclass(frozen=True)
class Level:
    """One depth of the tree, with everything derived from its multiplier."""

    depth: int
    multiplier: int
    blocks: int
    block_params: int
    block_bytes: int

    @property
    def params(self) -> int:
        return self.blocks * self.block_params

    @property
    def bytes(self) -> int:
        return self.blocks * self.block_bytes

    @property
    def empty(self) -> bool:
        return self.multiplier == 0


class Bank(BaseModel):
    """A hierarchical memory bank: tree shape, per-level multipliers, memory type, anchor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "bank"
    description: str = ""
    branching: int = Field(default=16, ge=2, le=4096, description="Children per node.")
    levels: list[int] = Field(
        description="Multiplier per level, from depth 1 down (0 = empty level). A mapping "
        "{depth: multiplier} is accepted too.",
    )
    memory_type: MemoryType = "ffn"
    anchor: Anchor = Field(description="A preset (160M, 410M, 1.4B) or a shape.")
    dtype: Literal["bf16", "fp16", "fp32", "fp8", "int8"] = "bf16"
    source: str = ""

    _doc: yamlio.Document | None = PrivateAttr(default=None)

    @field_validator("levels", mode="before")
    @classmethod
    def _levels(cls, value: Any) -> Any:
        if isinstance(value, dict):
            depths = []
            for key in value:
                if isinstance(key, bool) or not isinstance(key, int) or key < 1:
                    raise ValueError(f"level key {key!r} must be a depth 1, 2, ...")
                depths.append(key)
            if max(depths) > MAX_LEVELS:
                raise ValueError(f"at most {MAX_LEVELS} levels are supported")
            return [value.get(d, 0) for d in range(1, max(depths) + 1)]
        return value

    @field_validator("levels")
    @classmethod
    def _multipliers(cls, value: list[int]) -> list[int]:
        if len(value) > MAX_LEVELS:
            raise ValueError(f"at most {MAX_LEVELS} levels are supported, got {len(value)}")
        if any(m < 0 for m in value):
            raise ValueError("multipliers must not be negative (0 = empty level)")
        if not any(value):
            raise ValueError("every level is empty: give at least one positive multiplier")
        return value

    @field_validator("anchor", mode="before")
    @classmethod
    def _anchor(cls, value: Any) -> Any:
        if isinstance(value, str):
            for key, preset in ANCHORS.items():
                if key.lower() == value.strip().lower():
                    return preset
            raise ValueError(f"unknown anchor '{value}' (presets: {', '.join(ANCHORS)})")
        return value

    @model_validator(mode="after")
    def _sane(self) -> Bank:
        if unit_params(self.memory_type, self.anchor) <= 0:
            raise ValueError("anchor shape gives empty blocks")
        depth = len(self.levels)
        if self.branching ** depth > MAX_BLOCKS_PER_LEVEL:
            raise FieldError(
                f"branching {self.branching} over {depth} levels gives "
                f"{self.branching}**{depth} blocks at depth {depth}, over memsim's limit of "
                f"{MAX_BLOCKS_PER_LEVEL:,} blocks per level", ("levels", depth - 1))
        return self

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def unit_params(self) -> int:
        """Block parameters per unit of multiplier (c0 = 3 L d for FFN memories)."""
        return unit_params(self.memory_type, self.anchor)

    @property
    def all_levels(self) -> list[Level]:
        """Every level, depth 1 first, empty ones included."""
        out = []
        for depth, mult in enumerate(self.levels, start=1):
            params = mult * self.unit_params
            out.append(Level(depth=depth, multiplier=mult, blocks=self.branching**depth,
                             block_params=params, block_bytes=params * self.dtype_bytes))
        return out

    @property
    def active_levels(self) -> list[Level]:
        """Levels that hold blocks (multiplier > 0): the ones a query fetches."""
        return [lv for lv in self.all_levels if not lv.empty]

    def level(self, depth: int) -> Level:
        """The level at `depth` (1-based)."""
        if not 1 <= depth <= len(self.levels):
            raise KeyError(depth)
        return self.all_levels[depth - 1]

    @property
    def fetched_params(self) -> int:
        return sum(lv.block_params for lv in self.active_levels)

    @property
    def fetched_bytes(self) -> int:
        return sum(lv.block_bytes for lv in self.active_levels)

    @property
    def bank_params(self) -> int:
        return sum(lv.params for lv in self.active_levels)

    @property
    def bank_bytes(self) -> int:
        return sum(lv.bytes for lv in self.active_levels)

    @property
    def anchor_params(self) -> int:
        return self.anchor.total_params

    @property
    def anchor_bytes(self) -> int:
        return self.anchor_params * self.dtype_bytes

    @property
    def file(self) -> str | None:
        return self._doc.file if self._doc else None


def load_bank(ref: str | Path) -> Bank:
    """A bank from a YAML file, or a preset by name (A2, B2, C2, paper-storage-example)."""
    path = resources.resolve(ref, "banks")
    doc = yamlio.load(path)
    bank = validate_model(Bank, doc)
    bank._doc = doc
    return bank


def bank_from_dict(data: dict[str, Any], file: str = "<dict>") -> Bank:
    """A bank from plain data (notebooks, tests); errors name `file`."""
    return validate_model(Bank, yamlio.Document(data=data, file=file))


__all__ = ["ANCHORS", "Anchor", "Bank", "Level", "load_bank", "bank_from_dict", "InputError"]
