"""Tokenizer for the T-SQL subset, plus the *shape key* used to cache parsed batches.

pymssql interpolates parameters on the client, so consecutive requests for the same statement differ
only in their literals. ``scan_literals`` finds the literals with one regex pass and returns the batch
text with every literal replaced by a typed placeholder: that string keys the parse cache, and the
literal values are bound at execution time. The full ``tokenize`` runs only on a cache miss.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

from ..results import SQLError

# Literal kinds (part of the shape key because they decide the static type of the literal).
LIT_NSTR = "N"  # N'...'  -> nvarchar
LIT_STR = "S"  # '...'   -> varchar
LIT_INT = "I"  # fits int
LIT_BIGINT = "B"  # fits bigint
LIT_DEC = "D"  # 1.5 (numeric in SQL Server; float here)
LIT_FLOAT = "F"  # 1e3
LIT_HEX = "X"  # 0x00ff -> varbinary

LiteralValue = Union[str, int, float, bytes]

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<mark>\x00(?P<mk>[A-Za-z]+)(?P<mn>\d*)\x00)
  | (?P<lc>--[^\n]*)
  | (?P<bc>/\*)
  | (?P<nstr>[Nn]'(?:[^']|'')*')
  | (?P<str>'(?:[^']|'')*')
  | (?P<badstr>[Nn]?'(?:[^']|'')*$)
  | (?P<hex>0[xX][0-9a-fA-F]*)
  | (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<br>\[(?:[^\]]|\]\])*\])
  | (?P<badbr>\[(?:[^\]]|\]\])*$)
  | (?P<dq>"(?:[^"]|"")*")
  | (?P<gvar>@@[\w@$#]+)
  | (?P<var>@[\w@$#]*)
  | (?P<id>[^\W\d][\w@$#]*|\#[\w@$#]*)
  | (?P<op><>|!=|<=|>=|!<|!>|[-+*/%=<>(),.;~&|^{}:])
  | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)

_LITERAL_GROUPS = frozenset({"nstr", "str", "hex", "num"})

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


@dataclass
class Token:
    kind: str  # 'id', 'qid', 'lit', 'var', 'gvar', 'op', 'eof'
    value: str  # identifier text (unquoted), operator, upper-cased keyword in ``upper``
    line: int
    upper: str = ""  # for 'id': value.upper(); for 'op': the operator
    pos: int = 0  # offset in the shape key
    end: int = 0
    slot: int = -1  # for 'lit': index into the literal list
    lit_kind: str = ""  # for 'lit': LIT_*
    raw: str = ""  # source text (for error messages)


def _syntax_near(text: str, line: int) -> SQLError:
    return SQLError(102, f"Incorrect syntax near '{text}'.", 15, 1, line)


def _unclosed_quote(body: str, line: int) -> SQLError:
    return SQLError(105, f"Unclosed quotation mark after the character string '{body}'.", 15, 1, line)


def _literal(group: str | None, text: str) -> tuple[str, LiteralValue]:
    """The literal's kind (its marker in the shape key) and value.

    A string or binary literal longer than a non-max type holds (4000 nvarchar characters, 8000 varchar
    characters or varbinary bytes) gets kind + "m", so its batch has a shape key (and plan) of its own.
    """
    if group == "nstr":
        s = text[2:-1].replace("''", "'")
        return (LIT_NSTR + "m" if len(s) > 4000 else LIT_NSTR), s
    if group == "str":
        s = text[1:-1].replace("''", "'")
        return (LIT_STR + "m" if len(s) > 8000 else LIT_STR), s
    if group == "hex":
        digits = text[2:]
        if len(digits) % 2:
            digits = "0" + digits
        b = bytes.fromhex(digits)
        return (LIT_HEX + "m" if len(b) > 8000 else LIT_HEX), b
    # number
    if "e" in text or "E" in text:
        return LIT_FLOAT, float(text)
    if "." in text:
        return LIT_DEC, float(text)
    value = int(text)
    if value <= INT_MAX:
        return LIT_INT, value
    if value <= BIGINT_MAX:
        return LIT_BIGINT, value
    return LIT_DEC, float(value)


def _skip_block_comment(text: str, pos: int, line: int) -> tuple[int, int]:
    """``pos`` is just after an opening ``/*``; T-SQL block comments nest."""
    depth = 1
    while depth:
        star = text.find("*/", pos)
        open_ = text.find("/*", pos)
        if star < 0:
            raise SQLError(113, "Missing end comment mark '*/'.", 15, 1, line)
        if 0 <= open_ < star:
            depth += 1
            pos = open_ + 2
        else:
            depth -= 1
            pos = star + 2
    return pos, line


def _scan_slow(text: str) -> tuple[str, list[LiteralValue], list[str]]:
    """Return (shape key, literal values, literal source texts). Raises SQLError for unterminated strings."""
    parts: list[str] = []
    values: list[LiteralValue] = []
    raws: list[str] = []
    last = 0
    pos = 0
    n = len(text)
    match = _TOKEN_RE.match
    while pos < n:
        m = match(text, pos)
        assert m is not None
        group = m.lastgroup
        end = m.end()
        if group in _LITERAL_GROUPS:
            raw = m.group()
            kind, value = _literal(group, raw)
            parts.append(text[last:pos])
            nl = raw.count("\n")
            parts.append(f"\x00{kind}{nl}\x00" if nl else f"\x00{kind}\x00")
            values.append(value)
            raws.append(raw)
            last = end
        elif group == "bc":
            line = text.count("\n", 0, pos) + 1
            end, _ = _skip_block_comment(text, end, line)
        elif group == "badstr":
            line = text.count("\n", 0, pos) + 1
            raw = m.group()
            raise _unclosed_quote(raw[2:] if raw[0] in "Nn" else raw[1:], line)
        pos = end
    parts.append(text[last:])
    return "".join(parts), values, raws


# What scan_literals finds, by definition: the named matches of _FAST_RE.finditer(text). Only literals (and
# what may contain quotes or digits: comments, bracketed and double-quoted identifiers) are matched;
# whitespace, words and operators are skipped. scan_literals runs the faster, equivalent _SCAN_RE.
_FAST_RE = re.compile(
    r"""
    --[^\n]*
  | \[[^\]]*(?:\]\][^\]]*)*\]?
  | "[^"]*(?:""[^"]*)*"?
  | (?P<nstr>(?<![\w@#$])[Nn]'[^']*(?:''[^']*)*')
  | (?P<str>'[^']*(?:''[^']*)*')
  | (?P<badstr>(?<![\w@#$])[Nn]?')
  | (?P<hex>(?<![\w@#$.])0[xX][0-9a-fA-F]*)
  | (?P<num>(?<![\w@#$.])(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
    """,
    re.VERBOSE,
)


# scan_literals in one regex call per literal. _FAST_RE.finditer (the definition of what a literal is) runs
# its eight alternatives at every character: ~100 us for an 800-character upsert batch, the largest single
# cost of a request. _SCAN_RE first skips, in C, a maximal run of text that holds no literal -- each
# piece is either text where every _FAST_RE alternative fails, or exactly one of _FAST_RE's literal-free
# tokens (comment, [identifier], "identifier") -- and then matches the literal that starts there, with
# _FAST_RE's own patterns. Where that differs in form:
# * N/n is left in the skipped run (so identifiers are skipped fast); N'...' is matched at its quote and
#   looks back at the N, with the look-behind _FAST_RE applies at the N;
# * digits and '.' right after [\w@#$.] skip (_FAST_RE's look-behind rejects a number there);
# * a quote after [\w@#$] (other than such an N) that no later quote closes matches nothing in _FAST_RE
#   either: it is skipped too, so the literal part matches at the end of every skipped run (\Z at the end
#   of the text) and the regex never backtracks into a skipped run.
# tests/test_engine_lexer.py checks the equivalence with _FAST_RE.finditer on many random texts.
_SCAN_RE = re.compile(
    r"""
    (?:
        [^-\["'\d.]+
      | \[[^\]]*(?:\]\][^\]]*)*\]?
      | "[^"]*(?:""[^"]*)*"?
      | --[^\n]*
      | -(?!-)
      | \.(?!\d)
      | (?<=[\w@\#$.])[\d.]+
      | (?<=[\w@\#$])(?:(?<![Nn])|(?<=[\w@\#$][Nn]))'(?=[^']*\Z)
    )*
    (?:
        (?P<nstr>(?<=[Nn])(?<![\w@\#$][Nn])'[^']*(?:''[^']*)*')
      | (?P<str>'[^']*(?:''[^']*)*')
      | (?P<badstr>(?<![\w@\#$])')
      | (?P<badnstr>(?<=[Nn])(?<![\w@\#$][Nn])')
      | (?P<hex>(?<![\w@\#$.])0[xX][0-9a-fA-F]*)
      | (?P<num>(?<![\w@\#$.])(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
      | \Z
    )
    """,
    re.VERBOSE,
)


def scan_literals(text: str) -> tuple[str, list[LiteralValue], list[str]]:
    """Return (shape key, literal values, literal source texts). Raises SQLError for unterminated strings."""
    if "/*" in text:
        return _scan_slow(text)  # nested block comments need the token-by-token scanner
    parts: list[str] = []
    values: list[LiteralValue] = []
    raws: list[str] = []
    last = 0
    pos = 0
    match = _SCAN_RE.match
    while True:
        m = match(text, pos)
        assert m is not None  # the last alternative is \Z, and every skip piece can stop before it
        group = m.lastgroup
        if group is None:
            break  # \Z: no literal left
        end = m.end()
        start = m.start(group)
        if group == "nstr":
            start -= 1  # the N before the quote
        elif group == "badnstr":
            start -= 1
            group = "badstr"
        raw = text[start:end]
        if group == "badstr":
            line = text.count("\n", 0, start) + 1
            raise _unclosed_quote(text[start + (2 if raw[0] in "Nn" else 1) :], line)
        kind, value = _literal(group, raw)
        parts.append(text[last:start])
        nl = raw.count("\n") if kind[0] in "NS" else 0
        parts.append(f"\x00{kind}{nl}\x00" if nl else f"\x00{kind}\x00")
        values.append(value)
        raws.append(raw)
        last = pos = end
    parts.append(text[last:])
    return "".join(parts), values, raws


def tokenize(text: str) -> list[Token]:
    """Full tokenization (cache miss path). Literal tokens carry their slot in ``scan_literals`` order."""
    tokens: list[Token] = []
    pos = 0
    line = 1
    n = len(text)
    slot = 0
    match = _TOKEN_RE.match
    append = tokens.append
    while pos < n:
        m = match(text, pos)
        assert m is not None
        group = m.lastgroup
        raw = m.group()
        end = m.end()
        if group == "ws" or group == "lc":
            pass
        elif group == "mark":
            kind = m.group("mk")
            append(Token("lit", "", line, "", pos, end, slot=slot, lit_kind=kind.rstrip("m")))
            slot += 1
            nl = m.group("mn")
            if nl:
                line += int(nl)
        elif group == "bc":
            end, _ = _skip_block_comment(text, end, line)
            raw = text[pos:end]
        elif group == "id":
            append(Token("id", raw, line, raw.upper(), pos, end, raw=raw))
        elif group in _LITERAL_GROUPS:
            # every literal of a batch is a marker in its shape key; a raw one here sits where SQL Server
            # would not read a literal either (e.g. "x.1")
            raise _syntax_near(raw, line)
        elif group == "br":
            name = raw[1:-1].replace("]]", "]")
            append(Token("qid", name, line, name.upper(), pos, end, raw=raw))
        elif group == "dq":
            name = raw[1:-1].replace('""', '"')
            append(Token("qid", name, line, name.upper(), pos, end, raw=raw))
        elif group == "var":
            append(Token("var", raw, line, raw.upper(), pos, end, raw=raw))
        elif group == "gvar":
            append(Token("gvar", raw, line, raw.upper(), pos, end, raw=raw))
        elif group == "op":
            append(Token("op", raw, line, raw, pos, end, raw=raw))
        elif group == "badstr":
            raise _unclosed_quote(raw[2:] if raw[0] in "Nn" else raw[1:], line)
        elif group == "badbr":
            raise _unclosed_quote(raw[1:], line)
        else:
            raise _syntax_near(raw, line)
        line += raw.count("\n")
        pos = end
    append(Token("eof", "", line, "", n, n, raw=""))
    return tokens


MARKER_RE = re.compile("\x00[A-Za-z]+\\d*\x00")


def literal_values(text: str) -> Optional[list[LiteralValue]]:
    """Convenience for tests: the literal values of a batch."""
    return scan_literals(text)[1]
