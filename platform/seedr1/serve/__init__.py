"""Serving: the model on Ray Serve behind an OpenAI-compatible chat API with video input (app, media, errors)."""
