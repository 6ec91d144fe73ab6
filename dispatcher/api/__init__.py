"""``dispatcher api``: the ASGI service the main application calls (FastAPI).

``app`` builds the app (routers, bearer token, one error shape, metrics), ``routes`` holds one router
per concern (``feed``, ``health``), ``serve`` runs it with uvicorn. The OpenAPI document is generated
from the pydantic models and kept in ``docs/openapi.json`` (a test keeps the two identical).
"""
