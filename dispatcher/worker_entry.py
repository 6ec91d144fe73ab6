"""What a dramatiq worker process imports: the broker and every actor of the engine."""

from dispatcher import actors as actors
from dispatcher.preferences import actors as resident_actors

__all__ = ["actors", "resident_actors"]
