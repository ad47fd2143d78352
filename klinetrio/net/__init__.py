"""Network building blocks with no knowledge of Binance: the thin WebSocket client."""
