"""Tailor's search service (BentoML): ``bentos.service:Tailor``; see bentos/README.md."""
