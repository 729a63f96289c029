"""Network transport shared by every connector: WebSocket (anyio) and REST (httpx)."""
