// Drives the real connect-mssql-v2 store for the Python tests. The first stdin line is the setup
// ({"config": mssql config, "options": store options}; on stdin, not argv, so the password is not in
// the process list); then one JSON command per line in, one JSON answer per line out
// ({"ok": true, "result": ...} or {"ok": false, "error": ...}).
'use strict';

const readline = require('readline');
const MSSQLStore = require('connect-mssql-v2');

let setup = null;
let store = null;
let storeErrors = [];

function start(line) {
  setup = JSON.parse(line);
  store = new MSSQLStore(setup.config, setup.options || {});
  store.on('sessionError', (error, method) => { storeErrors.push(`${method}: ${error.message}`); });
  store.on('error', (error) => { storeErrors.push(`error: ${error.message}`); });
}

function call(method, ...args) {
  return new Promise((resolve, reject) => {
    store[method](...args, (err, value) => (err ? reject(err) : resolve(value)));
  });
}

async function run(cmd) {
  switch (cmd.op) {
    case 'get': return call('get', cmd.sid);
    case 'set': return call('set', cmd.sid, cmd.session);
    case 'touch': return call('touch', cmd.sid, cmd.session);
    case 'destroy': return call('destroy', cmd.sid);
    case 'length': return call('length');
    case 'all': return call('all');
    case 'clear': return call('clear');
    case 'destroyExpired':
      return new Promise((resolve) => { store.destroyExpired(() => resolve(null)); });
    case 'errors': { const out = storeErrors; storeErrors = []; return out; }
    case 'transaction': {
      // mssql's Transaction = tedious beginTransaction/commitTransaction/rollbackTransaction (TM requests)
      await store.dbReadyCheck();
      const mssql = require('mssql');
      const tx = new mssql.Transaction(store.databaseConnection);
      await tx.begin();
      const request = new mssql.Request(tx);
      request.input('sid', mssql.NVarChar(255), cmd.sid);
      await request.query(cmd.sql);
      const count = await new mssql.Request(tx).query('SELECT @@TRANCOUNT AS n');
      if (cmd.commit) await tx.commit(); else await tx.rollback();
      return count.recordset[0].n;
    }
    case 'query': {
      await store.dbReadyCheck();
      const mssql = require('mssql');
      const request = store.databaseConnection.request();
      for (const [name, spec] of Object.entries(cmd.params || {})) {
        const type = spec.type.endsWith('Max') ? mssql[spec.type.slice(0, -3)](mssql.MAX) : mssql[spec.type];
        let { value } = spec;
        if (spec.date && value !== null) value = new Date(value);
        if (spec.hex && value !== null) value = Buffer.from(value, 'hex');
        if (spec.output) request.output(name, type, value); else request.input(name, type, value);
      }
      const result = await request.query(cmd.sql);
      // Dates as ISO strings, Buffers as hex: JSON-safe and exact
      const recordset = result.recordset ? result.recordset.map((row) => Object.fromEntries(
        Object.entries(row).map(([k, v]) => [k, v instanceof Date ? v.toISOString()
          : Buffer.isBuffer(v) ? { hex: v.toString('hex') } : v]),
      )) : null;
      return { recordset, rowsAffected: result.rowsAffected, output: result.output };
    }
    case 'prepared': {
      await store.dbReadyCheck();
      const mssql = require('mssql');
      const ps = new mssql.PreparedStatement(store.databaseConnection);
      ps.input('sid', mssql.NVarChar(255));
      await ps.prepare(cmd.sql);
      const rows = [];
      for (const sid of cmd.sids) {
        const result = await ps.execute({ sid });
        rows.push(result.recordset);
      }
      await ps.unprepare();
      return rows;
    }
    case 'tediousReset': {
      // tedious's own Connection.reset(): the RESETCONNECTION bit on its next request
      const { Connection, Request } = require('tedious');
      const c = setup.config;
      const conn = new Connection({
        server: c.server,
        authentication: { type: 'default', options: { userName: c.user, password: c.password } },
        options: { ...c.options, port: c.port, database: c.database, connectTimeout: 15000 },
      });
      await new Promise((resolve, reject) => conn.connect((err) => (err ? reject(err) : resolve())));
      const batch = (sql) => new Promise((resolve, reject) => {
        const rows = [];
        const request = new Request(sql, (err) => (err ? reject(err) : resolve(rows)));
        request.on('row', (columns) => rows.push(columns.map((col) => col.value)));
        conn.execSqlBatch(request);
      });
      let resets = 0;
      conn.on('resetConnection', () => { resets += 1; });
      await batch(cmd.before);
      const before = await batch(cmd.probe);
      await new Promise((resolve, reject) => conn.reset((err) => (err ? reject(err) : resolve())));
      const after = await batch(cmd.probe);
      conn.close();
      return { before, after, resets, inTransaction: conn.inTransaction };
    }
    case 'close': await store.databaseConnection.close(); return null;
    default: throw new Error(`unknown op ${cmd.op}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
let chain = Promise.resolve();
rl.on('line', (line) => {
  if (store === null) {
    start(line);
    return;
  }
  chain = chain.then(async () => {
    let answer;
    try {
      const result = await run(JSON.parse(line));
      answer = { ok: true, result: result === undefined ? null : result };
    } catch (err) {
      answer = { ok: false, error: String(err && err.message ? err.message : err), number: err && err.number };
    }
    process.stdout.write(`${JSON.stringify(answer)}\n`);
  });
});
rl.on('close', () => {
  chain.then(() => store && store.databaseConnection.close()).finally(() => process.exit(0));
});
