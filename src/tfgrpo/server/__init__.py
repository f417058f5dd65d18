"""HTTP servers: `model_server` (`tfgrpo serve-model`, an OpenAI-compatible API over any backend) and
`latency_server` (a model-free stand-in for benchmarks). FastAPI and uvicorn are imported only here."""
