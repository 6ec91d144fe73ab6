"""Targeting: a request's area to exactly the residents inside it (PostGIS ``ST_Covers`` semantics).

``area`` parses and validates the GeoJSON, ``estimate`` says from the geometry alone what covering it
will cost (and refuses a boundary too long for its area), ``stats`` reads residents per coarse cell,
``planner`` picks the cheapest exact plan, ``cover`` turns the area into H3 cells (interior taken
whole, a boundary band tested point by point) and id ranges, ``match`` runs the ranges in PostgreSQL
and hands the recipients to a sink, ``cli_target`` is the `dispatcher target` ops tool. ``shapes`` and
``footprint`` build the ruinous thin areas and measure a run's peak memory, for tests and benchmarks.
"""
