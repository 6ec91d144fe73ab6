"""What a dramatiq worker process imports: the broker and every actor of the engine."""

import dispatcher.actors
import dispatcher.agencies.actors
import dispatcher.preferences.actors
import dispatcher.relay.actors

__all__ = ["dispatcher"]
