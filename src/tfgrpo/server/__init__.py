"""HTTP servers: `model_server` (`tfgrpo serve-model`, an OpenAI-compatible API over any backend).
FastAPI and uvicorn are imported only here."""
