"""The API's routers, one module per concern; :mod:`dispatcher.api.app` mounts them."""
