"""Saving/loading the engine's tables as JSON with tagged values (no pickle): atomic replace on save."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..results import MAX
from .storage import ColumnInfo, Database, Index, Table
from .types import SqlT

if TYPE_CHECKING:
    from . import Engine

FORMAT = 1


def _enc(v: Any) -> Any:
    if isinstance(v, datetime):
        return {"$dt": v.isoformat()}
    if isinstance(v, bytes):
        return {"$b": base64.b64encode(v).decode("ascii")}
    if isinstance(v, float):
        return {"$f": repr(v)}
    return v


def _dec(v: Any) -> Any:
    if isinstance(v, dict):
        if "$dt" in v:
            return datetime.fromisoformat(v["$dt"])
        if "$b" in v:
            return base64.b64decode(v["$b"])
        if "$f" in v:
            return float(v["$f"])
    return v


def dump(engine: Engine) -> dict[str, Any]:
    dbs = []
    for db in engine.databases.values():
        tables = []
        for t in db.tables.values():
            tables.append(
                {
                    "object_id": t.object_id,
                    "schema": t.schema,
                    "name": t.name,
                    "created": t.created.isoformat(),
                    "modified": t.modified.isoformat(),
                    "columns": [
                        {
                            "name": c.name,
                            "kind": c.type.kind,
                            "length": c.type.length,
                            "nullable": c.nullable,
                            "binary": c.binary,
                        }
                        for c in t.columns
                    ],
                    "indexes": [
                        {
                            "name": ix.name,
                            "index_id": ix.index_id,
                            "columns": [[ci, d] for ci, d in ix.columns],
                            "unique": ix.unique,
                            "primary_key": ix.primary_key,
                            "clustered": ix.clustered,
                            "unique_constraint": ix.unique_constraint,
                            "included": ix.included,
                        }
                        for ix in t.indexes
                    ],
                    "rows": [[_enc(v) for v in row] for row in t.rows.values()],
                }
            )
        dbs.append({"name": db.name, "tables": tables})
    return {"format": FORMAT, "object_counter": engine.object_counter_state(), "databases": dbs}


def save_file(engine: Engine, path: str) -> None:
    data = dump(engine)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".standin-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_file(engine: Engine, path: str) -> None:
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown stand-in data file format {data.get('format')!r}")
    engine.restore_object_counter(int(data.get("object_counter", 0)))
    for dbd in data["databases"]:
        db = engine.database_named(dbd["name"])
        if db is None:
            db = Database(dbd["name"])
            engine.databases[dbd["name"]] = db
        for td in dbd["tables"]:
            cols = [
                ColumnInfo(
                    c["name"],
                    SqlT(c["kind"], c["length"] if c["length"] != MAX else MAX),
                    c["nullable"],
                    i + 1,
                    c["binary"],
                )
                for i, c in enumerate(td["columns"])
            ]
            t = Table(
                td["object_id"],
                db.name,
                td["schema"],
                td["name"],
                cols,
                datetime.fromisoformat(td["created"]),
            )
            t.modified = datetime.fromisoformat(td["modified"])
            for row in td["rows"]:
                t.insert([_dec(v) for v in row])
            for ixd in td["indexes"]:
                t.add_index(
                    Index(
                        ixd["name"],
                        ixd["index_id"],
                        [(ci, d) for ci, d in ixd["columns"]],
                        ixd["unique"],
                        ixd["primary_key"],
                        ixd["clustered"],
                        ixd["unique_constraint"],
                        ixd["included"],
                    )
                )
            db.add(t)
