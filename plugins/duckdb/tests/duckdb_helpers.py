"""Event builders shared by this plugin's tests."""

from __future__ import annotations

from marketfeeder.models import (
    BookDelta,
    BookSnapshot,
    BookState,
    BookStatus,
    BookTicker,
    Connection,
    ConnectionStatus,
    DataType,
    Event,
    Gap,
    Kline,
    MarkPrice,
    Side,
    Ticker,
    Trade,
    ValidationFailure,
)

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
SEC = 1_000_000_000


def trade(i: int, *, exchange: str = "binance", symbol: str = "BTC-USDT", ts: int | None = None,
          price: float | None = None) -> Trade:
    t = T0 + i * 1_000 if ts is None else ts
    event: Trade = Trade.fast(exchange, symbol, t - 100, t, i, 100.0 + i * 0.5 if price is None else price,
                      0.25 + i % 3, Side.BUY if i % 2 else Side.SELL, t - 200)
    return event


def one_of_each(ts: int = T0) -> list[Event]:
    """One event of every core class, in a plausible arrival order."""
    return [
        Connection.fast("binance", "", None, ts, None, "c1", ConnectionStatus.UP, "", "ws://127.0.0.1:1/ws"),
        BookState.fast("binance", "BTC-USDT", None, ts + 1, None, BookStatus.SYNCING, "start"),
        BookSnapshot.fast("binance", "BTC-USDT", None, ts + 2, 100, ((99.5, 1.0), (99.0, 2.0)), ((100.5, 1.5),)),
        BookDelta.fast("binance", "BTC-USDT", ts + 2, ts + 3, 102, 101, ((99.5, 0.0), (99.2, 3.0)), (), None),
        BookState.fast("binance", "BTC-USDT", None, ts + 4, 102, BookStatus.LIVE, ""),
        Ticker.fast("binance", "BTC-USDT", ts, ts + 5, 7, 100.0, 99.5, 1.0, 100.5, 2.0, 95.0, 101.0, 94.0,
                    1234.5, 123450.0, 999, 5.0, 5.26, 99.9),
        BookTicker.fast("backpack", "SOL-USDC", ts, ts + 6, 55, 20.1, 3.0, 20.2, 4.0, ts - 10),
        trade(1, ts=ts + 7),
        Kline.fast("binance", "BTC-USDT", ts, ts + 8, None, "1m", ts - 60 * SEC, ts, 99.0, 101.0, 98.0, 100.0,
                   12.5, False, 1250.0, 42),
        MarkPrice.fast("backpack", "SOL-USDC-PERP", ts, ts + 9, None, 20.15, 20.14, 0.0001, ts + 3600 * SEC, None),
        Gap.fast("binance", "BTC-USDT", None, ts + 10, None, DataType.ORDERBOOK, 103, 110, "sequence break", 8),
        ValidationFailure.fast("binance", "BTC-USDT", ts, ts + 11, 1, "price_band", "price 1e9 outside band",
                               "quarantine", "Trade", ts + 7),
    ]
