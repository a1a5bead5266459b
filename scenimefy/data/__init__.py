"""Reading, decoding and generating image data (no Ray here; the Ray layer wraps these)."""
