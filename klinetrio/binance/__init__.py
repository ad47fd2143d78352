"""Binance's wire formats, WebSocket streams and REST API."""
