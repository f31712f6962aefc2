"""Network builders and loaders for the embedded preset and for bring-your-own models."""
