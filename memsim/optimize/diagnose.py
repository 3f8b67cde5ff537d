"""Explain an infeasible placement: which tier is short of capacity, and by how much."""

from __future__ import annotations

from collections.abc import Sequence

from memsim.bank import Bank
from memsim.blockmap import Subtree
from memsim.errors import InfeasibleError
from memsim.profile import Profile
from memsim.units import format_size


def precheck(profile: Profile, bank: Bank, whole_levels: bool = True,
             excluded_bytes: int = 0) -> None:
    """Fast checks with a plain answer, before any solver runs (a level that fits on no
    tier is only a problem when levels are placed whole). `excluded_bytes` are bank bytes
    never stored (blocked subtrees), left out of the total."""
    ram = profile.ram
    if ram is None:
        raise InfeasibleError(
            f"profile '{profile.name}' has no tier of kind ram to hold the anchor model",
            file=profile.file, field="tiers")
    anchor = bank.anchor_bytes
    if anchor > ram.capacity_bytes:
        raise InfeasibleError(
            f"tier '{ram.name}' is short by {format_size(anchor - ram.capacity_bytes)}: the "
            f"{bank.anchor.name} anchor needs {format_size(anchor)}, the tier holds "
            f"{format_size(ram.capacity_bytes)}", file=profile.file, field="tiers")
    room = {t.name: t.capacity_bytes - (anchor if t.name == ram.name else 0)
            for t in profile.tiers}
    largest_name = max(room, key=lambda n: room[n])
    largest = room[largest_name]
    homeless = [lv for lv in (bank.active_levels if whole_levels else []) if lv.bytes > largest]
    if homeless:
        what = "; ".join(f"level {lv.depth} ({format_size(lv.bytes)}, short by "
                         f"{format_size(lv.bytes - largest)})" for lv in homeless)
        verb = "fits" if len(homeless) == 1 else "fit"
        raise InfeasibleError(
            f"{what} {verb} on no tier: the roomiest, '{largest_name}', has "
            f"{format_size(largest)} free", file=profile.file, field="tiers")
    total = sum(room.values())
    needed = bank.bank_bytes - excluded_bytes
    if needed > total:
        raise InfeasibleError(
            f"bank '{bank.name}' needs {format_size(needed)} (plus the "
            f"{format_size(anchor)} anchor in RAM) but the tiers together have "
            f"{format_size(total)} free; short by {format_size(needed - total)}",
            file=profile.file, field="tiers")


def subtree_bytes(bank: Bank, trees: Sequence[Subtree]) -> int:
    """Bytes of the bank's blocks inside any of `trees` (nested subtrees counted once)."""
    b = bank.branching
    roots = sorted({(t.depth, t.block) for t in trees})
    outer = []
    for depth, block in roots:
        if not any(d <= depth and block // b ** (depth - d) == k for d, k in outer):
            outer.append((depth, block))
    total = 0
    for depth, _block in outer:
        for lv in bank.active_levels:
            if lv.depth >= depth:
                total += b ** (lv.depth - depth) * lv.block_bytes
    return total


def shortfall_message(profile: Profile, bank: Bank, slack: dict[str, float]) -> str:
    """Words for the capacity each tier would need beyond what it has (bytes)."""
    short = [(name, amount) for name, amount in slack.items() if amount > 0]
    if not short:
        return (f"no placement of bank '{bank.name}' fits the capacities of profile "
                f"'{profile.name}'")
    parts = []
    for name, amount in short:
        cap = profile.tier(name).capacity_bytes
        parts.append(f"tier '{name}' is short by {format_size(amount)} (holds {format_size(cap)})")
    return ("levels cannot be packed onto the tiers whole: " + "; ".join(parts)
            + " in the placement that needs the least extra room")
