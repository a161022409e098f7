"""The window accumulator of the upgrade test's jobs: a ``msgspec.Struct`` in two versions.

A job's module is one file at two points in time; a test runs both versions
from one checkout, so ``WF_STATE_VERSION=2`` selects the next version of the
class: it gains ``largest`` (the largest amount seen) with a default, which
state written by version 1 takes on restore. The results stay ``[count, sum]``,
so both versions have one batch answer.
"""

import os

import msgspec

if os.environ.get("WF_STATE_VERSION", "1") == "2":

    class Totals(msgspec.Struct, frozen=True):
        """Count, sum and largest of the amounts in a window (version 2)."""

        count: int
        total: int
        largest: int = 0

        def plus(self, amount: int) -> "Totals":
            return Totals(self.count + 1, self.total + amount, max(self.largest, amount))

        def merged(self, other: "Totals") -> "Totals":
            return Totals(
                self.count + other.count, self.total + other.total, max(self.largest, other.largest)
            )

else:

    class Totals(msgspec.Struct, frozen=True):  # type: ignore[no-redef]
        """Count and sum of the amounts in a window (version 1)."""

        count: int
        total: int

        def plus(self, amount: int) -> "Totals":
            return Totals(self.count + 1, self.total + amount)

        def merged(self, other: "Totals") -> "Totals":
            return Totals(self.count + other.count, self.total + other.total)


class CountTotals:
    """(count, sum) of the amounts in a window, accumulated in :class:`Totals`."""

    def create_accumulator(self) -> Totals:
        return Totals(0, 0)

    def add(self, value: tuple[str, int], acc: Totals) -> Totals:
        return acc.plus(value[1])

    def merge(self, a: Totals, b: Totals) -> Totals:
        return a.merged(b)

    def get_result(self, acc: Totals) -> list[int]:
        return [acc.count, acc.total]
