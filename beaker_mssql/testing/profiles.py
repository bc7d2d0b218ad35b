"""Engine profiles: which SQL Server-compatible engine the stand-in behaves like.

The README claims three engines. Each is a :class:`Profile`, kept as *data*: the switches the engine
reads, one :class:`Deviation` per behaviour with the source it is modelled on, and ``lacks``: what a
test needs that the engine does not have, with the reason a test skips for. Nothing here is tuned to
make this package's code pass; a behaviour without a source does not belong in a profile.

* ``sqlserver`` -- on-premises SQL Server, locking READ COMMITTED (the default).
* ``azure`` -- Azure SQL Database: READ_COMMITTED_SNAPSHOT on.
* ``babelfish`` -- Babelfish for PostgreSQL, as measured on Babelfish 4.3.0 (PostgreSQL 16.4).

Choose one with ``SQLServerStandIn(profile=...)``, ``beaker-mssql standin --profile``, or the
``BEAKER_MSSQL_PROFILE`` environment variable / ``--mssql-profile`` pytest option. Against a real
server the pytest plugin calls :func:`detect_profile` instead.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional, Union

__all__ = [
    "AZURE",
    "BABELFISH",
    "ENV_PROFILE",
    "PROFILES",
    "SQLSERVER",
    "Deviation",
    "Profile",
    "babelfish_index_name",
    "clip_utf8",
    "detect_profile",
    "get_profile",
]

ENV_PROFILE = "BEAKER_MSSQL_PROFILE"

MEASURED = "measured on Babelfish 4.3.0 / PostgreSQL 16.4 (issue 9)"
BABELFISH_ERRORS_URL = "https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/babelfish-strict.html"
#: Babelfish's own source and test expectations, branch BABEL_4_3_STABLE (docs/engines.md lists what
#: was read there and what is still unverified).
BABELFISH_4_3_COMMIT = "4fc9c477a874770b8632ec6b475da5e1715b16eb"


def babelfish_source(path: str) -> str:
    """A link to ``path`` in babelfish_extensions as of Babelfish 4.3 (BABEL_4_3_STABLE)."""
    return (f"https://github.com/babelfish-for-postgresql/babelfish_extensions/blob/"
            f"{BABELFISH_4_3_COMMIT}/{path}")


BABELFISH_APPLOCK_SRC = babelfish_source("contrib/babelfishpg_tsql/src/applock.c")
BABELFISH_INDEX_NAME_SRC = babelfish_source(
    "contrib/babelfishpg_tsql/src/backend_parser/gram-tsql-epilogue.y.c"
)
BABELFISH_UNSUPPORTED_URL = (
    "https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/"
    "babelfish-compatibility.tsql.limitations-unsupported.html"
)
BABELFISH_ESCAPE_HATCHES_URL = "https://babelfishpg.org/docs/usage/escape_hatches/ (escape_hatch_table_hints)"
BABELFISH_ISOLATION_URL = "https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/babelfish-transaction.html"
RCSI_URL = (
    "https://learn.microsoft.com/en-us/sql/t-sql/statements/set-transaction-isolation-level-transact-sql"
    " (READ COMMITTED with READ_COMMITTED_SNAPSHOT ON)"
)
RCSI_UPDATE_URL = (
    "https://learn.microsoft.com/en-us/sql/relational-databases/"
    "sql-server-transaction-locking-and-row-versioning-guide (behavior when modifying data: "
    "'the selection of rows to update is done using a blocking scan where an update (U) lock is taken')"
)
HINTS_URL = "https://learn.microsoft.com/en-us/sql/t-sql/queries/hints-transact-sql-table (READCOMMITTEDLOCK)"
AZURE_DEFAULT_URL = (
    "https://learn.microsoft.com/en-us/sql/t-sql/statements/alter-database-transact-sql-set-options "
    "(READ_COMMITTED_SNAPSHOT: ON is the default in Azure SQL Database)"
)
ENGINE_EDITION_URL = (
    "https://learn.microsoft.com/en-us/sql/t-sql/functions/serverproperty-transact-sql "
    "(EngineEdition 5 = SQL Database)"
)

#: Babelfish's fixed number for an error it cannot map to a SQL Server number.
BABELFISH_UNMAPPED = 33557097


@dataclass(frozen=True)
class Deviation:
    """One way the engine differs from on-premises SQL Server, and where that is documented or measured."""

    what: str
    source: str


@dataclass(frozen=True)
class Profile:
    """The switches the stand-in's engine reads, and the documentation of each.

    ``lacks`` maps a feature name (the argument of the ``engine_needs`` pytest marker) to the reason a
    test that needs it is skipped under this profile.
    """

    name: str
    title: str
    #: Readers under READ COMMITTED see the last committed row versions and take no shared locks.
    read_committed_snapshot: bool = False
    #: Table hints (UPDLOCK, SERIALIZABLE, HOLDLOCK, NOLOCK, READPAST, ...) parse but change nothing.
    ignore_table_hints: bool = False
    merge: bool = True
    create_or_alter: bool = True
    #: ``]]`` (an escaped ``]``) inside a bracketed name parses.
    bracket_escapes: bool = True
    #: What sp_getapplock returns for @LockTimeout = 0 when another session holds the lock.
    applock_nowait_busy: int = -1
    #: What sp_getapplock returns when it grants a lock after waiting for it (SQL Server: 1).
    applock_waited_grant: int = 1
    #: sp_getapplock keeps the first 255 UTF-8 *bytes* of @Resource (SQL Server: 255 characters).
    applock_resource_utf8_bytes: bool = False
    #: sys.indexes shows CREATE INDEX names rewritten (babelfish_index_name) and INDEXPROPERTY finds none.
    rewritten_index_names: bool = False
    #: DATALENGTH counts UTF-8 bytes for nvarchar instead of UTF-16 bytes.
    datalength_utf8: bool = False
    #: HASHBYTES hashes an nvarchar's UTF-8 bytes instead of its UTF-16LE bytes.
    hashbytes_utf8: bool = False
    #: The error number of a login to a database that does not exist.
    missing_database_error: int = 4060
    #: PRELOGIN: answer FEDAUTHREQUIRED 0x01 to a client offering an Entra ID token, which its LOGIN7
    #: FEDAUTH must then echo. SQL Server leaves the option out: "The FEDAUTHREQUIRED payload option token
    #: is not supported by SQL Server" ([MS-TDS] Appendix A, <35> to 2.2.6.5), so the echo bit is 0.
    prelogin_fedauth_required: bool = False
    #: SQL Server error numbers this engine reports with its own number and text (see error_for).
    remapped_errors: frozenset[int] = frozenset()
    #: SERVERPROPERTY('EngineEdition') as the engine reports it.
    engine_edition: int = 3
    #: Marks @@VERSION so detect_profile() recognises the stand-in under this profile as the engine itself.
    version_tag: str = ""
    deviations: tuple[Deviation, ...] = ()
    lacks: Mapping[str, str] = field(default_factory=dict)

    def skip_reason(self, feature: str) -> Optional[str]:
        """Why a test needing ``feature`` cannot pass on this engine (None: it can)."""
        return self.lacks.get(feature)


SQLSERVER = Profile(
    name="sqlserver",
    title="SQL Server 2016+ (on-premises), locking READ COMMITTED",
    version_tag="",
)

AZURE = Profile(
    name="azure",
    title="Azure SQL Database (READ_COMMITTED_SNAPSHOT on)",
    read_committed_snapshot=True,
    engine_edition=5,
    version_tag="Azure SQL Database profile",
    prelogin_fedauth_required=True,
    deviations=(
        Deviation("READ_COMMITTED_SNAPSHOT is ON (the Azure SQL Database default)", AZURE_DEFAULT_URL),
        Deviation(
            "READ COMMITTED readers see the last committed version of each row as of the start of the "
            "statement and never wait for writers (no shared locks)",
            RCSI_URL,
        ),
        Deviation(
            "UPDATE/DELETE still find their rows with a blocking scan (U then X locks); UPDLOCK, XLOCK, "
            "HOLDLOCK/SERIALIZABLE, REPEATABLEREAD and READCOMMITTEDLOCK readers still lock",
            f"{RCSI_UPDATE_URL}; {HINTS_URL}",
        ),
        Deviation("SERVERPROPERTY('EngineEdition') is 5", ENGINE_EDITION_URL),
        Deviation(
            "PRELOGIN answers FEDAUTHREQUIRED 0x01 to a client that offers an Entra ID token, and LOGIN7's "
            "fFedAuthEcho must then be 1 (SQL Server, whose Appendix A note says it does not support the "
            "option, leaves it out and expects 0)",
            "https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-tds/"
            "60f56408-0188-4cd5-8b90-25c6f2423868 ([MS-TDS] 2.2.6.5 PRELOGIN, and its Appendix A note <35>); "
            "https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-tds/"
            "1d82a68b-57c2-46e9-84ba-ed41f7bd0c7c (3.3.5.5: the echo must match)",
        ),
    ),
)

BABELFISH = Profile(
    name="babelfish",
    title="Babelfish for PostgreSQL 4.3",
    read_committed_snapshot=True,
    ignore_table_hints=True,
    merge=False,
    create_or_alter=False,
    bracket_escapes=False,
    applock_nowait_busy=-999,
    applock_waited_grant=0,
    applock_resource_utf8_bytes=True,
    rewritten_index_names=True,
    datalength_utf8=True,
    hashbytes_utf8=True,
    missing_database_error=911,
    remapped_errors=frozenset({208, 1913, 2628}),
    engine_edition=2,
    version_tag="Babelfish for PostgreSQL profile",
    deviations=(
        Deviation(
            "INDEXPROPERTY(object, index, 'IndexID') is NULL even when the index exists; sys.indexes shows "
            "a CREATE INDEX name rewritten as <name><table><md5 of name>, lower case "
            "(IX_t_expires on t -> ix_t_expirest...), cut to 63 bytes (PostgreSQL's NAMEDATALEN - 1)",
            f"{MEASURED}; {BABELFISH_INDEX_NAME_SRC} (construct_unique_index_name)",
        ),
        Deviation("sp_getapplock with @LockTimeout = 0 on a lock another session holds returns -999 "
                  "(SQL Server: -1); with a timeout > 0 it returns -1 as SQL Server does",
                  f"{MEASURED}; {BABELFISH_APPLOCK_SRC} (_sp_getapplock_internal)"),
        Deviation("sp_getapplock returns 0 for a lock granted after waiting (SQL Server: 1); every "
                  "return code >= 0 still means granted",
                  f"{BABELFISH_APPLOCK_SRC} (_sp_getapplock_internal returns 0 on every grant)"),
        Deviation("sp_getapplock keeps the first 255 UTF-8 bytes of @Resource (SQL Server: 255 characters), "
                  "so two long non-ASCII names can share one lock",
                  f"{BABELFISH_APPLOCK_SRC} (APPLOCK_MAX_RESOURCE_LENGTH 256, text_to_cstring_buffer)"),
        Deviation(
            "a missing table is error 33557097 'relation \"<db>_dbo.<name>\" does not exist' (not 208); too "
            "long a value is 33557097 'value too long for type character varying(<n>)' (not 2628)",
            MEASURED,
        ),
        Deviation(
            "an error Babelfish reports as 33557097 (unmapped) ends the batch and rolls back the transaction",
            BABELFISH_ERRORS_URL,
        ),
        Deviation("a login to a database that does not exist fails with 911 (not 4060); the stand-in sends "
                  "SQL Server's text and severity (16) for 911, as Babelfish's own were not recorded",
                  MEASURED),
        Deviation("CREATE INDEX of a name that exists fails with 2714 (not 1913)", MEASURED),
        Deviation("MERGE is not supported (the stand-in answers 33557097 \"'MERGE' is not currently "
                  "supported in Babelfish\", Babelfish's wording for an unsupported feature)",
                  f"{MEASURED}; {BABELFISH_UNSUPPORTED_URL} (Syntax that isn't supported: MERGE)"),
        Deviation("CREATE OR ALTER is a syntax error at ALTER (the stand-in: 102 'syntax error at or near "
                  "\"ALTER\"'; Babelfish's number was not recorded)", MEASURED),
        Deviation("a bracketed name holding ']]' ([a]]b]) is a syntax error (the stand-in: 102; Babelfish's "
                  "number was not recorded)",
                  f"{MEASURED}; {BABELFISH_UNSUPPORTED_URL} (identifiers that contain @ or ]] characters)"),
        Deviation("table hints are accepted and ignored (UPDLOCK and SERIALIZABLE take no locks)",
                  f"{MEASURED}; {BABELFISH_ESCAPE_HATCHES_URL}"),
        Deviation("readers never block on writers (PostgreSQL MVCC: each statement reads committed rows)",
                  f"{MEASURED}; {BABELFISH_ISOLATION_URL}"),
        Deviation("DATALENGTH(N'abc') is 3: nvarchar is stored as UTF-8",
                  f"{MEASURED}; {babelfish_source('contrib/babelfishpg_common/sql/varchar.sql')} "
                  "(sys.NVARCHAR is a domain over sys.VARCHAR)"),
        Deviation("HASHBYTES over nvarchar hashes its UTF-8 bytes (SQL Server: UTF-16LE), so a hash "
                  "computed on one engine never matches another's; later Babelfish versions hash UTF-16LE "
                  "(babelfish_extensions pull requests 3259 and 3385, BABEL-4891)",
                  f"{babelfish_source('contrib/babelfishpg_tsql/src/string.c')} (hashbytes hashes the "
                  "argument's stored bytes); "
                  f"{babelfish_source('contrib/babelfishpg_common/sql/varchar.sql')} "
                  "(nvarchar -> varchar is a binary cast)"),
        Deviation("SERVERPROPERTY('EngineEdition') is 2 (Standard). Babelfish's @@VERSION starts "
                  "'Babelfish for PostgreSQL with SQL Server Compatibility'; the stand-in's names the "
                  "profile instead, and detect_profile() looks only for 'Babelfish'",
                  f"{babelfish_source('contrib/babelfishpg_tsql/src/properties.c')}; "
                  f"{babelfish_source('test/JDBC/expected/BABEL-VERSION.out')}"),
    ),
    lacks={
        "merge": "Babelfish for PostgreSQL does not support MERGE (measured on Babelfish 4.3)",
        "bracket_escapes": "Babelfish's parser rejects ']]' inside a bracketed name, so table names holding "
                           "']' cannot be used there (measured on Babelfish 4.3)",
        "table_hints": "Babelfish ignores table hints: NOLOCK reads no uncommitted rows, UPDLOCK and "
                       "SERIALIZABLE take no locks (measured on Babelfish 4.3)",
        "sqlserver_errors": "Babelfish reports some errors as 33557097 / 911 (measured on Babelfish 4.3)",
        "login_error_numbers": "Babelfish answers a login to an unknown database with 911 (measured on "
                               "Babelfish 4.3; severity 16 in the stand-in, as SQL Server's 911), which "
                               "pymssql then keeps reporting for later failed logins of the process "
                               "(README: 'Login error numbers from pymssql')",
    },
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SQLSERVER, AZURE, BABELFISH)}


def get_profile(profile: Union[str, Profile, None] = None) -> Profile:
    """A profile by name (case-insensitive); None means ``$BEAKER_MSSQL_PROFILE`` or ``sqlserver``."""
    if isinstance(profile, Profile):
        return profile
    name = profile if profile is not None else (os.environ.get(ENV_PROFILE) or SQLSERVER.name)
    found = PROFILES.get(name.strip().lower())
    if found is None:
        source = "" if profile is not None else f" (from ${ENV_PROFILE})"
        raise ValueError(
            f"unknown stand-in profile {name!r}{source}; choose one of: {', '.join(sorted(PROFILES))}"
        )
    return found


def detect_profile(version: str, engine_edition: Optional[int], rcsi: Optional[bool] = None) -> Profile:
    """The profile of a server from ``@@VERSION``, ``SERVERPROPERTY('EngineEdition')`` and, where the
    server tells, ``sys.databases.is_read_committed_snapshot_on`` of the current database."""
    text = version.lower()
    if "babelfish" in text:
        return BABELFISH
    if engine_edition == AZURE.engine_edition or rcsi:
        return AZURE
    return SQLSERVER


def babelfish_index_name(index: str, table: str) -> str:
    """The name sys.indexes shows on Babelfish for ``CREATE INDEX index ON table``."""
    lowered = index.lower()
    digest = hashlib.md5(lowered.encode("utf-8"), usedforsecurity=False).hexdigest()
    # construct_unique_index_name: name + table + md5(name), then truncate_identifier() to
    # NAMEDATALEN - 1 = 63 bytes, never splitting a character (profiles.BABELFISH cites the source).
    return clip_utf8(lowered + table.lower() + digest, 63)


def clip_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``limit`` bytes."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def profiles_markdown() -> str:
    """The profiles as beaker_mssql/testing/README.md lists them (a test keeps the two the same)."""
    lines: list[str] = []
    for profile in PROFILES.values():
        lines.append(f"- **`{profile.name}`**: {profile.title}.")
        if not profile.deviations:
            lines.append("  The stand-in's own behaviour, as documented above.")
        for deviation in profile.deviations:
            lines.append(f"  - {deviation.what}. Source: {deviation.source}.")
        for feature, reason in sorted(profile.lacks.items()):
            lines.append(f"  - Tests marked `engine_needs(\"{feature}\")` skip: {reason}.")
    return "\n".join(lines) + "\n"
