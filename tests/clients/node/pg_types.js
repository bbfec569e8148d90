#!/usr/bin/env node
// Eddy with node-postgres: typed parameters in the extended protocol (int,
// bigint, numeric, text, bool, date, timestamp, timestamptz, bytea, jsonb,
// arrays, NULL) read back as node-postgres's types, errors with Postgres's
// SQLSTATE, transactions and savepoints.
//
// Usage: NODE_PATH=$EDDY_CLIENTS_DIR/node/node_modules node pg_types.js PORT
// Prints one line per check group, then 'pg_types: N passed, M failed';
// exits 1 if any group failed.
'use strict'
const assert = require('assert/strict')
const { Client } = require('pg')
const { test, finish } = require('./harness')

const PORT = Number(process.argv[2])
const config = { host: '127.0.0.1', port: PORT, user: 'eddy', database: 'eddy', connectionTimeoutMillis: 10000 }
const T = 'pg_types_t'

const ROW = {
  id: '1', // node-postgres reads bigint as a string, as it cannot hold every int8 exactly
  i: -42,
  n: '12345.678', // and numeric as a string
  t: 'héllo, wörld',
  b: true,
  d: '2024-02-29',
  ts: '2024-02-29 13:14:15.123456',
  tz: new Date(Date.UTC(2024, 1, 29, 13, 14, 15)),
  bin: Buffer.from([0, 1, 0xfe, 0xff]),
  j: { k: [1, 2, { x: null }], s: 'v' },
}

async function main() {
  const client = new Client(config)
  // Dates and timestamps without a time zone as text, so they compare exactly.
  client.setTypeParser(1082, (v) => v)
  client.setTypeParser(1114, (v) => v)
  await client.connect()
  try {
    await client.query(`DROP TABLE IF EXISTS ${T}`)
    await client.query(
      `CREATE TABLE ${T} (id bigint PRIMARY KEY, i int, n numeric(12,3), t text, b bool, d date, ` +
        `ts timestamp, tz timestamptz, bin bytea, j jsonb)`,
    )

    await test('typed parameters and native values', async () => {
      const insert = `INSERT INTO ${T} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`
      const values = [ROW.id, ROW.i, ROW.n, ROW.t, ROW.b, ROW.d, ROW.ts, ROW.tz, ROW.bin, JSON.stringify(ROW.j)]
      assert.equal((await client.query(insert, values)).rowCount, 1)
      assert.equal((await client.query(insert, ['2', null, null, null, null, null, null, null, null, null])).rowCount, 1)
      const { rows } = await client.query(`SELECT * FROM ${T} WHERE id = $1`, [1])
      const got = rows[0]
      // jsonb is described as jsonb, so pg parses it.
      assert.deepEqual(got, ROW)
      const nulls = (await client.query(`SELECT * FROM ${T} WHERE id = $1`, [2])).rows[0]
      for (const [column, value] of Object.entries(nulls)) {
        if (column !== 'id') assert.equal(value, null, `${column} should be NULL`)
      }
      return '10 types and NULLs'
    })

    await test('arrays', async () => {
      const { rows } = await client.query(`SELECT id FROM ${T} WHERE id = ANY($1::bigint[]) ORDER BY id`, [[1, 2, 3]])
      assert.deepEqual(rows.map((r) => r.id), ['1', '2'])
      const arr = (await client.query('SELECT $1::int[] AS a, $2::text[] AS b', [[1, null, 3], ['a', 'b c']])).rows[0]
      assert.deepEqual(arr, { a: [1, null, 3], b: ['a', 'b c'] })
      return 'ANY($1) and int[]/text[] round trips'
    })

    await test('errors carry their SQLSTATE', async () => {
      const cases = [
        ['SELECT * FROM pg_types_no_such_table', '42P01'],
        [`SELECT no_such_column FROM ${T}`, '42703'],
        ['SELEC 1', '42601'],
        ['SELECT 1 / 0', '22012'],
        [`INSERT INTO ${T} (id) VALUES (1)`, '23505'],
      ]
      for (const [sql, code] of cases) {
        await assert.rejects(client.query(sql), (e) => e.code === code || assert.fail(`${sql}: ${e.code} ${e.message}`))
      }
      assert.equal((await client.query('SELECT 1 AS one')).rows[0].one, 1)
      return `${cases.length} errors`
    })

    await test('transactions and savepoints', async () => {
      await client.query('BEGIN')
      await client.query(`INSERT INTO ${T} (id) VALUES (10)`)
      await client.query('SAVEPOINT s')
      await assert.rejects(client.query('SELECT 1 / 0'), (e) => e.code === '22012')
      await client.query('ROLLBACK TO SAVEPOINT s')
      await client.query(`INSERT INTO ${T} (id) VALUES (11)`)
      await client.query('COMMIT')
      const { rows } = await client.query(`SELECT id FROM ${T} WHERE id >= 10 ORDER BY id`)
      assert.deepEqual(rows.map((r) => r.id), ['10', '11'])
      return 'commit after ROLLBACK TO past an error'
    })

    await client.query(`DROP TABLE ${T}`)
  } finally {
    await client.end()
  }
  finish('pg_types')
}

main().catch((e) => {
  console.log(`FAIL - setup: ${e.message}`)
  process.exit(1)
})
