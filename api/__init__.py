"""HTTP API: FastAPI app serving related-article lists from the current index version.

`api.app.create_app(settings)` assembles the routers; nothing is loaded at import time.
"""
