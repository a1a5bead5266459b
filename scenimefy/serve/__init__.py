"""Serving trained translators over HTTP with Ray Serve (`scenimefy serve`, README "Serve").

`app.py` holds the two deployments (a batching translator and a FastAPI ingress with the web
page) and the builders; `http.py` the pure request handling (limits, decoding, encoding, error
replies) the ingress calls; `static/` the self-contained page. This is a Ray layer package.
"""
