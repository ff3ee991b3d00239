"""dynocorn: a pre-fork WSGI HTTP server for Heroku-style platforms."""

__version__ = "0.1.0"
