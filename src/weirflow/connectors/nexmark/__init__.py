"""The Nexmark auction benchmark's event stream as a weirflow source.

:class:`NexmarkSource` produces Person, Auction and Bid events
(:mod:`weirflow.connectors.nexmark.model`) deterministically from their event
numbers, in interleaved splits, optionally paced to a target rate; positions
are checkpointed like any source's. :class:`NexmarkGenerator` builds single
events (for batch reference computations and tests).
"""

from weirflow.connectors.nexmark.generator import NexmarkConfig, NexmarkGenerator
from weirflow.connectors.nexmark.model import Auction, Bid, Event, Person
from weirflow.connectors.nexmark.source import NexmarkSource, NexmarkSourceReader

__all__ = [
    "Auction",
    "Bid",
    "Event",
    "NexmarkConfig",
    "NexmarkGenerator",
    "NexmarkSource",
    "NexmarkSourceReader",
    "Person",
]
