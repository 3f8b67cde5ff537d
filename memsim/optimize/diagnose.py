"""Explain an infeasible placement: which tier is short of capacity, and by how much."""

from __future__ import annotations

from memsim.bank import Bank
from memsim.errors import InfeasibleError
from memsim.profile import Profile
from memsim.units import format_size


def precheck(profile: Profile, bank: Bank, whole_levels: bool = True) -> None:
    """Fast checks with a plain answer, before any solver runs (a level that fits on no
    tier is only a problem when levels are placed whole)."""
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
    for lv in bank.active_levels if whole_levels else []:
        if lv.bytes > room[largest_name]:
            raise InfeasibleError(
                f"level {lv.depth} ({format_size(lv.bytes)}) fits on no tier: the roomiest, "
                f"'{largest_name}', has {format_size(room[largest_name])} free; short by "
                f"{format_size(lv.bytes - room[largest_name])}", file=profile.file,
                field="tiers")
    total = sum(room.values())
    if bank.bank_bytes > total:
        raise InfeasibleError(
            f"bank '{bank.name}' needs {format_size(bank.bank_bytes)} (plus the "
            f"{format_size(anchor)} anchor in RAM) but the tiers together have "
            f"{format_size(total)} free; short by {format_size(bank.bank_bytes - total)}",
            file=profile.file, field="tiers")


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
