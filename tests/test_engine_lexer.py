"""scan_literals (the one-regex fast path) finds exactly the literals _FAST_RE.finditer defines."""

from __future__ import annotations

import random
from typing import Any

import pytest

from beaker_mssql.testing.engine import lexer
from beaker_mssql.testing.results import SQLError


def reference_scan(text: str) -> tuple[str, list[Any], list[str]]:
    """The previous scan_literals: one _FAST_RE.finditer pass (the definition of a literal)."""
    parts: list[str] = []
    values: list[Any] = []
    raws: list[str] = []
    last = 0
    for m in lexer._FAST_RE.finditer(text):
        group = m.lastgroup
        if group is None:
            continue
        pos = m.start()
        raw = m.group()
        if group == "badstr":
            line = text.count("\n", 0, pos) + 1
            body = text[pos + (2 if raw[0] in "Nn" else 1):]
            raise SQLError(105, f"Unclosed quotation mark after the character string '{body}'.", 15, 1, line)
        kind, value = lexer._literal(group, raw)
        if kind in ("N", "S", "X") and len(value) > (4000 if kind == "N" else 8000):  # type: ignore[arg-type]
            kind += "m"
        parts.append(text[last:pos])
        nl = raw.count("\n") if kind[0] in "NS" else 0
        parts.append(f"\x00{kind}{nl}\x00" if nl else f"\x00{kind}\x00")
        values.append(value)
        raws.append(raw)
        last = m.end()
    parts.append(text[last:])
    return "".join(parts), values, raws


def outcome(scan: Any, text: str) -> Any:
    try:
        return scan(text)
    except SQLError as e:
        return ("error", e.number, e.message, e.line)


UPSERT = (
    "SET NOCOUNT ON; SET XACT_ABORT ON;\nBEGIN TRANSACTION;\n"
    "UPDATE [dbo].[sessions] WITH (UPDLOCK, SERIALIZABLE) SET [session] = N'O''Brien " + "x" * 300 + "', "
    "[expires] = DATEADD(second, 3600, GETUTCDATE())\n  WHERE [sid] = N'ab' AND [sid] = N'ab' "
    "COLLATE Latin1_General_BIN2;\nIF @@ROWCOUNT = 0\n    INSERT INTO [dbo].[sessions] ([sid], [session], "
    "[expires]) VALUES (N'ab', N'v', DATEADD(second, 3600, GETUTCDATE()));\nCOMMIT TRANSACTION;\n"
    "SET NOCOUNT OFF;"
)


@pytest.mark.parametrize("text", [
    UPSERT,
    "SELECT [session] FROM [dbo].[t] WHERE [sid] = N'x' AND [expires] > GETUTCDATE()",
    "SELECT xN'a', N'b', n'c', @vN'd', t1.5, x.1, .5, 1., 1e5, 0x0A, 0x, 12abc, \u0663\u0664",
    "SELECT 1 -- it's a comment 2\n, [a'b], \"c'd\", [e]]f'], 'g''h', -3 - -4",
    "SELECT x'abc 5",       # a quote after a word that nothing closes: not a literal; 5 still is
    "SELECT N'abc",         # unclosed N'...': error 105
    "SELECT 'a',\n'b\nc', 'unclosed\nd",
    "PRINT N'\u00e9\u00e8' + 'x' + 'N''y'",
    "",
])
def test_known_texts(text: str) -> None:
    assert outcome(lexer.scan_literals, text) == outcome(reference_scan, text)


def test_random_texts_match_the_reference() -> None:
    pieces = list("Nn'\"[]-.0123456789xXeE+ \n@#$_a;,()*") + [
        "\u0663", "\u00e9", "--", "''", "N'", "0x", "1.5", "]]", '""', "SELECT ", "[dbo].[t]",
    ]
    rnd = random.Random(20240229)
    for _ in range(40000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 16)))
        if "/*" in text:  # block comments take the tokenizer path in both
            continue
        assert outcome(lexer.scan_literals, text) == outcome(reference_scan, text), repr(text)
