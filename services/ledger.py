"""Which numbered messages the collector holds, per reporter: duplicates are recognised, gaps and holes shown.

Rebuilt from the store's replay at start, so a resend after a collector restart is still a duplicate.
Per reporter it keeps the highest number below which everything is accounted for, and the numbers
above it seen out of order (a short set: resends fill it back in).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shared.delivery import NO_REPORTER, Gap, to_ranges


@dataclass
class Account:
    """One reporter's numbers: everything up to `upto` is accounted for, `above` holds later ones seen."""

    service: str = ""
    upto: int = 0
    above: set[int] = field(default_factory=set)

    def has(self, seq: int) -> bool:
        """Whether this number is already held (stored, or declared lost in a gap)."""
        return seq <= self.upto or seq in self.above

    def add(self, first: int, last: int) -> None:
        """Account for every number from first to last (one, or a run: a reporter's numbers mostly come in runs)."""
        if last <= self.upto:
            return
        if first > self.upto + 1:
            self.above.update(range(first, last + 1))
            return
        self.upto = last
        if self.above:
            self.above = {seq for seq in self.above if seq > last}  # a new set: readers may be copying the old
            while self.upto + 1 in self.above:
                self.upto += 1
                self.above.remove(self.upto)

    def missing(self) -> int:
        """Numbers below the highest seen that never arrived: records lost with no gap notice (so far)."""
        upto, above = self.upto, tuple(self.above)  # copies: the ingest thread may be adding meanwhile
        return max(above) - upto - len(above) if above else 0


class Ledger:
    """Accounts of every reporter, the gaps they declared and the duplicates dropped; written by the ingest thread
    only, read by others through copies."""

    def __init__(self) -> None:
        self.accounts: dict[bytes, Account] = {}
        self.gaps: list[tuple[bytes, Gap]] = []
        self.duplicates = 0
        self.lost: Counter[str] = Counter()

    def has(self, reporter: bytes, seq: int) -> bool:
        """Whether a numbered message is already held; unnumbered ones never are."""
        account = self.accounts.get(reporter)
        return reporter != NO_REPORTER and account is not None and account.has(seq)

    def add(self, reporter: bytes, seqs: list[int], service: str) -> None:
        """Account for stored messages of one reporter, a run of consecutive numbers at a time."""
        account = self.accounts.get(reporter)
        if account is None:
            if reporter == NO_REPORTER:
                return
            account = self.accounts[reporter] = Account(service)
        for first, last in to_ranges(seqs):
            account.add(first, last)

    def add_gap(self, reporter: bytes, seq: int, gap: Gap) -> None:
        """Account for a gap notice and every number it says was dropped."""
        self.add(reporter, [seq], gap.service)
        account = self.accounts[reporter]
        account.service = gap.service
        account.add(gap.first, gap.last)
        self.gaps.append((reporter, gap))
        self.lost[gap.service] += gap.count

    def missing(self) -> dict[str, int]:
        """Per service, numbers skipped over with no gap notice: lost in transit, or not yet resent."""
        found: Counter[str] = Counter()
        for account in list(self.accounts.values()):  # a copy: the ingest thread may be adding meanwhile
            found[account.service] += account.missing()
        return {service: n for service, n in found.items() if n}
