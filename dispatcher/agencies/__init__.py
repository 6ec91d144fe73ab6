"""The agencies' side: who may publish where, and what an agency ever sees of residents.

- :mod:`~dispatcher.agencies.registry`: the agency registry (id, name, kind, jurisdiction), loaded from a
  GeoJSON FeatureCollection (``dispatcher agencies import``) or by the ``update_agencies`` actor.
- :mod:`~dispatcher.agencies.jurisdiction`: a request's area must lie inside its agency's jurisdiction
  (targeting's semantics: covers, boundary inside, plus a small tolerance in metres).
- :mod:`~dispatcher.agencies.pseudonyms`: "Neighbor #" pseudonyms, a keyed hash per (agency, resident).
- :mod:`~dispatcher.agencies.responses`: residents' share / decline / opt out of all future requests,
  and the only agency-facing view of them (shares under a pseudonym).
- :mod:`~dispatcher.agencies.actors` and :mod:`~dispatcher.agencies.api`: the actor and HTTP entry points.

This package is the only writer of ``agencies``, ``request_responses`` and ``request_opt_outs``.
Importing it does no work.
"""
