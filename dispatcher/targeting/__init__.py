"""Targeting: a request's area to exactly the residents inside it (PostGIS ``ST_Covers`` semantics).

``area`` parses and validates the GeoJSON, ``cover`` turns it into H3 cells (interior taken whole,
a boundary band tested point by point) and id ranges, ``match`` runs the ranges in PostgreSQL and
hands the recipients to a sink, ``cli_target`` is the `dispatcher target` ops tool.
"""
