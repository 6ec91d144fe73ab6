"""The feed: which published requests cover a resident or a point (the reverse of targeting).

``index`` stores each request's H3 cover when it is accepted, ``lookup`` answers a resident or a
point with a few index probes plus an exact test in the boundary band (``geometry`` keeps the areas
prepared), ``cursor`` cuts pages, ``cards`` is what a resident may see of a request.

A resident who moves into an area after a request was published sees it on the feed at once, but is
not notified: push and email go to the residents inside the area when the request is targeted.
"""
