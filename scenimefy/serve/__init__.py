"""Serving trained translators over HTTP with Ray Serve (`scenimefy serve`, README "Serve").

`app.py` holds the two deployments (a batching translator that also translates videos, and a
FastAPI ingress with the web page) and the builders; `handling.py` the pure request handling
(limits, recognising and probing videos, decoding, encoding, error replies) the ingress calls;
`static/` the self-contained page. This is a Ray layer package.
"""
