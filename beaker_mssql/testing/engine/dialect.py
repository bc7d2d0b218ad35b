"""What an engine profile changes in the engine's answers: refused syntax and restated errors.

Kept apart from the parser and executor so that the profile data (testing/profiles.py) is read in one
place: the parser still accepts SQL Server's T-SQL subset, and these functions refuse or restate what
another engine does not accept or words differently.
"""

from __future__ import annotations

import re
from typing import Optional

from ..profiles import BABELFISH_UNMAPPED, Profile, babelfish_index_name
from ..results import SQLError
from . import ast as A

_CREATE_OR_ALTER = re.compile(r"\bCREATE\s+OR\s+ALTER\b", re.IGNORECASE)
_BRACKETED = re.compile(r"\[((?:[^\]]|\]\])*)\]")


def refused_batch(profile: Profile, shape: str) -> Optional[SQLError]:
    """A syntax the engine rejects before parsing (``shape`` is the batch with literals taken out).

    Babelfish fails ``CREATE OR ALTER`` with a syntax error at ALTER (measured on Babelfish 4.3); its
    number was not recorded, so the stand-in uses its own syntax-error number, 102. The same for a
    bracketed name holding an escaped ``]`` (``[a]]b]``), which Babelfish's parser rejects.
    """
    if not profile.create_or_alter:
        match = _CREATE_OR_ALTER.search(shape)
        if match is not None:
            line = shape.count("\n", 0, match.start()) + 1
            return SQLError(102, 'syntax error at or near "ALTER"', 15, 1, line)
    if not profile.bracket_escapes and "]]" in shape:
        for name in _BRACKETED.finditer(shape):
            if "]]" in name.group(1):
                line = shape.count("\n", 0, name.start()) + 1
                return SQLError(
                    102, f"Incorrect syntax near '{name.group(0)}'. (Babelfish's parser rejects ']]' "
                    "inside a bracketed name.)", 15, 1, line)
    return None


def refused_statements(profile: Profile, statements: list[A.Stmt]) -> Optional[SQLError]:
    """A statement the engine does not support, found before anything runs (Babelfish: MERGE)."""
    if profile.merge:
        return None
    for st in statements:
        if isinstance(st, A.Merge):
            # Babelfish's wording for an unsupported feature, with its fixed number 33557097.
            return SQLError(BABELFISH_UNMAPPED, "'MERGE' is not currently supported in Babelfish", 16, 1,
                            st.line)
        inner: list[A.Stmt] = []
        if isinstance(st, A.Block):
            inner = st.body
        elif isinstance(st, A.If):
            inner = [st.then] + ([st.else_] if st.else_ is not None else [])
        elif isinstance(st, A.While):
            inner = [st.body]
        found = refused_statements(profile, inner) if inner else None
        if found is not None:
            return found
    return None


def restate(profile: Profile, error: SQLError) -> SQLError:
    """``error`` as the profile's engine reports it (the same error when it reports it as SQL Server).

    Babelfish (measured on 4.3): a missing table is 33557097 ``relation "<db>_<schema>.<name>" does not
    exist`` (names folded to lower case, as Babelfish stores them), a value too long for its column is
    33557097 ``value too long for type character varying(<n>)``, a second CREATE INDEX of a name is
    2714 (SQL Server: 1913).
    """
    if error.number not in profile.remapped_errors:
        return error
    ctx = error.context
    if error.number == 208 and "name" in ctx:
        relation = f"{ctx['database']}_{ctx['schema']}.{ctx['name']}".lower()
        text = f'relation "{relation}" does not exist'
    elif error.number == 2628 and "length" in ctx:
        text = f"value too long for type character varying({ctx['length']})"
    elif error.number == 1913 and "index" in ctx:
        # An index is a relation in PostgreSQL: Babelfish reports the duplicate as 2714.
        name = babelfish_index_name(ctx["index"], ctx["table"])
        restated = SQLError(2714, f'relation "{name}" already exists', 16, 1, error.line)
        restated.context = dict(ctx, restated_from=error.number)
        return restated
    else:
        return error
    restated = SQLError(BABELFISH_UNMAPPED, text, 16, 1, error.line)
    restated.context = dict(ctx, restated_from=error.number)
    return restated
