"""The token stream answering a request: result sets (COLMETADATA + ROW), DONE / DONEINPROC per
statement, messages, and an output parameter's RETURNVALUE ([MS-TDS] 2.2.7)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Optional

from .results import MAX, Column, DatabaseChanged, Done, Message, ResultSet, SqlType
from .tds import (  # the wire's fixed-size fields, shared with tds.py
    _DATETIME,
    _DONE,
    _H,
    _I,
    _Q,
    COLLATION,
    CURCMD_SELECT,
    DONE_COUNT,
    DONE_ERROR,
    DONE_FINAL,
    DONE_MORE,
    PLP_CHUNK,
    PLP_NULL,
    TOKEN_COLMETADATA,
    TOKEN_DONEINPROC,
    TOKEN_RETURNVALUE,
    _d,
    _i,
    _q,
    b_varchar,
    database_changed,
    done,
    message_token,
)

Encoder = Callable[[Any], bytes]

_NULL1 = b"\x00"
_NULL2 = b"\xff\xff"
_EPOCH_ORDINAL = datetime(1900, 1, 1).toordinal()


def _enc_tinyint(value: Any) -> bytes:
    return _NULL1 if value is None else b"\x01" + bytes((value,))


def _enc_smallint(value: Any) -> bytes:
    return _NULL1 if value is None else b"\x02" + value.to_bytes(2, "little", signed=True)


def _enc_int(value: Any) -> bytes:
    return _NULL1 if value is None else b"\x04" + _i.pack(value)


def _enc_bigint(value: Any) -> bytes:
    return _NULL1 if value is None else b"\x08" + _q.pack(value)


def _enc_bit(value: Any) -> bytes:
    if value is None:
        return _NULL1
    return b"\x01\x01" if value else b"\x01\x00"


def _enc_float(value: Any) -> bytes:
    return _NULL1 if value is None else b"\x08" + _d.pack(value)


def datetime_parts(value: datetime) -> tuple[int, int]:
    """(days since 1900-01-01, 1/300-second ticks since midnight) of a DATETIME value."""
    days = value.toordinal() - _EPOCH_ORDINAL
    micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
    ticks = (micros * 3 + 5000) // 10000  # round to the nearest 1/300 s
    if ticks >= 300 * 86400:
        days += 1
        ticks -= 300 * 86400
    return days, ticks


def _enc_datetime(value: Any) -> bytes:
    if value is None:
        return _NULL1
    days, ticks = datetime_parts(value)
    return _DATETIME.pack(8, days, ticks)


def _enc_nvarchar(value: Any) -> bytes:
    if value is None:
        return _NULL2
    data: bytes = value.encode("utf-16-le")
    return _H.pack(len(data)) + data


def _enc_varbinary(value: Any) -> bytes:
    if value is None:
        return _NULL2
    data = bytes(value)
    return _H.pack(len(data)) + data


def plp(data: bytes) -> bytes:
    """Partially Length-Prefixed bytes: total length, chunks, zero terminator (the MAX types)."""
    n = len(data)
    if n <= PLP_CHUNK:
        if n == 0:
            return b"\x00" * 12
        return _Q.pack(n) + _I.pack(n) + data + b"\x00\x00\x00\x00"
    parts = [_Q.pack(n)]
    view = memoryview(data)
    for start in range(0, n, PLP_CHUNK):
        piece = view[start:start + PLP_CHUNK]
        parts.append(_I.pack(len(piece)))
        parts.append(bytes(piece))
    parts.append(b"\x00\x00\x00\x00")
    return b"".join(parts)


def _enc_nvarchar_max(value: Any) -> bytes:
    return PLP_NULL if value is None else plp(value.encode("utf-16-le"))


def _enc_varbinary_max(value: Any) -> bytes:
    return PLP_NULL if value is None else plp(bytes(value))


def column_type_info(column: Column) -> tuple[bytes, Encoder]:
    """(TYPE_INFO bytes for COLMETADATA, value encoder for ROW) of one column."""
    kind = column.type
    if kind is SqlType.INT:
        return b"\x26\x04", _enc_int
    if kind is SqlType.TINYINT:  # INTN of length 1 / 2 ([MS-TDS] 2.2.5.4.2)
        return b"\x26\x01", _enc_tinyint
    if kind is SqlType.SMALLINT:
        return b"\x26\x02", _enc_smallint
    if kind is SqlType.BIGINT:
        return b"\x26\x08", _enc_bigint
    if kind is SqlType.BIT:
        return b"\x68\x01", _enc_bit
    if kind is SqlType.FLOAT:
        return b"\x6d\x08", _enc_float
    if kind is SqlType.DATETIME:
        return b"\x6f\x08", _enc_datetime
    if kind is SqlType.NVARCHAR:
        if column.length == MAX or column.length > 4000:
            return b"\xe7\xff\xff" + COLLATION, _enc_nvarchar_max
        return b"\xe7" + _H.pack(2 * max(column.length, 1)) + COLLATION, _enc_nvarchar
    if kind is SqlType.VARBINARY:
        if column.length == MAX or column.length > 8000:
            return b"\xa5\xff\xff", _enc_varbinary_max
        return b"\xa5" + _H.pack(max(column.length, 1)), _enc_varbinary
    raise ValueError(f"unsupported column type {kind!r}")


def _fits(column: Column, rows: list[tuple[Any, ...]], index: int) -> bool:
    """Whether every value of a sized nvarchar/varbinary column fits its declared length."""
    if column.type is SqlType.NVARCHAR:
        limit = 2 * max(column.length, 1)  # bytes on the wire
        for row in rows:
            value = row[index]
            # UTF-16 takes 2 or 4 bytes a character: only a value that might not fit gets encoded.
            if value is not None and 4 * len(value) > limit and len(value.encode("utf-16-le")) > limit:
                return False
    elif column.type is SqlType.VARBINARY:
        limit = max(column.length, 1)
        for row in rows:
            value = row[index]
            if value is not None and len(value) > limit:
                return False
    return True


class ResultEncoder:
    """COLMETADATA once, then ROW tokens with per-column encoders chosen up front (the hot path).

    A sized nvarchar/varbinary column holding a longer value (an expression typed too narrowly) is
    sent as MAX instead: a value larger than its declared length would corrupt the client's buffers.
    """

    __slots__ = ("encoders", "metadata")

    def __init__(self, columns: list[Column], rows: Optional[list[tuple[Any, ...]]] = None) -> None:
        parts = [bytes((TOKEN_COLMETADATA,)), _H.pack(len(columns))]
        encoders: list[Encoder] = []
        for index, column in enumerate(columns):
            if (rows and column.length != MAX and column.type in (SqlType.NVARCHAR, SqlType.VARBINARY)
                    and not _fits(column, rows, index)):
                column = Column(column.name, column.type, MAX, column.nullable)
            type_info, encoder = column_type_info(column)
            flags = 0x0001 if column.nullable else 0x0000
            parts.append(_I.pack(0))           # UserType (4 bytes from TDS 7.2 on)
            parts.append(_H.pack(flags | 0x0008))  # nullable + "updateable unknown"
            parts.append(type_info)
            parts.append(b_varchar(column.name))
            encoders.append(encoder)
        self.metadata = b"".join(parts)
        self.encoders = encoders

    def rows(self, rows: list[tuple[Any, ...]]) -> list[bytes]:
        """ROW tokens for ``rows`` as a list of pieces, to be joined once with the rest of the reply."""
        encoders = self.encoders
        out: list[bytes] = []
        append = out.append
        row_token = b"\xd1"
        for row in rows:
            append(row_token)
            for encoder, value in zip(encoders, row):
                append(encoder(value))
        return out


def encode_events(events: list[Any], server_name: str, in_proc: bool = False) -> bytes:
    """The token stream answering one SQL batch, from the engine's events.

    DONE_MORE goes on every DONE but the last, as SQL Server does; a batch whose events do not end
    in a Done (an engine that stopped early) still gets a final DONE so the client is never left waiting.
    ``in_proc``: the statements of an RPC call, each ended by DONEINPROC (with MORE); the caller closes
    the stream with DONEPROC.
    """
    if in_proc:
        return _encode_in_proc(events, server_name)
    parts: list[bytes] = []
    append = parts.append
    last_done = -1
    for index in range(len(events) - 1, -1, -1):  # usually the last event: one step
        if isinstance(events[index], Done):
            last_done = index
            break
    after_rows = False
    error_seen = False
    last_done_part = -1
    for index, event in enumerate(events):
        if isinstance(event, Done):
            last_done_part = len(parts)
            if event.count is None and not event.error and not after_rows:
                # the DONE of SET/BEGIN/COMMIT/NOCOUNT statements: prebuilt (most DONEs of an upsert batch)
                append(_DONE_FINAL_PLAIN if index == last_done else _DONE_MORE_PLAIN)
            else:
                status = DONE_FINAL if index == last_done else DONE_MORE
                if event.error:
                    status |= DONE_ERROR
                append(done(status, event.count, CURCMD_SELECT if after_rows else 0))
            after_rows = False
            error_seen = False
        elif isinstance(event, ResultSet):
            encoder = ResultEncoder(event.columns, event.rows)
            append(encoder.metadata)
            parts.extend(encoder.rows(event.rows))
            after_rows = True
        elif isinstance(event, Message):
            append(message_token(event, server_name))
            error_seen = error_seen or event.is_error
        elif isinstance(event, DatabaseChanged):
            append(database_changed(event.new, event.old))
        else:  # pragma: no cover - the engine only produces the four event types
            raise TypeError(f"unknown engine event {event!r}")
    if last_done != len(events) - 1 or not events:
        # Everything after the last Done needs a closing DONE (and the earlier last one needs MORE).
        if last_done_part >= 0:
            token, status, curcmd, count = _DONE.unpack(parts[last_done_part])
            parts[last_done_part] = _DONE.pack(token, status | DONE_MORE, curcmd, count)
        append(done(DONE_ERROR if error_seen else DONE_FINAL))
    return b"".join(parts)


def _encode_in_proc(events: list[Any], server_name: str) -> bytes:
    parts: list[bytes] = []
    after_rows = False
    for event in events:
        if isinstance(event, Done):
            status = DONE_MORE | (DONE_ERROR if event.error else 0)
            if event.count is not None:
                status |= DONE_COUNT
            parts.append(_DONE.pack(TOKEN_DONEINPROC, status, CURCMD_SELECT if after_rows else 0,
                                    event.count or 0))
            after_rows = False
        elif isinstance(event, ResultSet):
            encoder = ResultEncoder(event.columns, event.rows)
            parts.append(encoder.metadata)
            parts.extend(encoder.rows(event.rows))
            after_rows = True
        elif isinstance(event, Message):
            parts.append(message_token(event, server_name))
        elif isinstance(event, DatabaseChanged):
            parts.append(database_changed(event.new, event.old))
    return b"".join(parts)


_DONE_MORE_PLAIN = done(DONE_MORE)
_DONE_FINAL_PLAIN = done(DONE_FINAL)


def returnvalue(ordinal: int, name: str, wire: tuple[SqlType, int], value: Any) -> bytes:
    """RETURNVALUE of an output parameter: ordinal, name, status 1 (output), TYPE_INFO, value."""
    type_info, encoder = column_type_info(Column(name, wire[0], wire[1]))
    return (bytes((TOKEN_RETURNVALUE,)) + _H.pack(ordinal) + b_varchar(name) + b"\x01" + _I.pack(0)
            + _H.pack(0x0001) + type_info + encoder(value))
