#!/usr/bin/env node
// Eddy with node-postgres: pg-cursor (Execute with a row limit + Flush) over
// 20,000 rows, and a SUBSCRIBE cursor through plain client.query.
//
// Usage: NODE_PATH=$EDDY_CLIENTS_DIR/node/node_modules node pg_cursor.js PORT
// Prints one line per check group, then 'pg_cursor: N passed, M failed';
// exits 1 if any group failed.
'use strict'
const assert = require('assert/strict')
const { Client } = require('pg')
const { test, finish } = require('./harness')
const Cursor = require('pg-cursor')

const PORT = Number(process.argv[2])
const config = { host: '127.0.0.1', port: PORT, user: 'eddy', database: 'eddy', connectionTimeoutMillis: 10000 }
const T = 'pg_cursor_t'
const V = 'pg_cursor_v'
const N = 20000

async function connect() {
  const client = new Client(config)
  await client.connect()
  return client
}

async function main() {
  const admin = await connect()
  await admin.query(`DROP MATERIALIZED VIEW IF EXISTS ${V}`)
  await admin.query(`DROP TABLE IF EXISTS ${T}`)
  await admin.query(`CREATE TABLE ${T} (id BIGINT PRIMARY KEY, name TEXT, amount BIGINT)`)
  await admin.query(`INSERT INTO ${T} SELECT x, 'row ' || x, x * 3 FROM generate_series(1, ${N}) AS g(x)`)
  await admin.query(`CREATE MATERIALIZED VIEW ${V} AS SELECT id, name, amount FROM ${T} WHERE id <= 3`)
  await admin.query('FLUSH')

  await test('pg-cursor, read(500) over 20,000 rows', async () => {
    const client = await connect()
    try {
      const cursor = client.query(new Cursor(`SELECT id, name, amount FROM ${T} WHERE id > $1`, [0]))
      const ids = new Set()
      let total = 0n
      let reads = 0
      for (;;) {
        const rows = await cursor.read(500)
        if (rows.length === 0) break
        assert.ok(rows.length <= 500, `read(500) gave ${rows.length} rows`)
        reads++
        for (const r of rows) {
          const id = BigInt(r.id) // BIGINT arrives as a string
          assert.equal(r.name, `row ${id}`, `bad row ${JSON.stringify(r)}`)
          assert.equal(BigInt(r.amount), id * 3n, `bad row ${JSON.stringify(r)}`)
          assert.ok(!ids.has(r.id), `row ${r.id} seen twice`)
          ids.add(r.id)
          total += BigInt(r.amount)
        }
      }
      await cursor.close()
      const want = 3n * BigInt(N * (N + 1) / 2)
      assert.equal(ids.size, N, `got ${ids.size} rows, want ${N}`)
      assert.equal(total, want, `sum ${total}, want ${want}`)
      assert.ok(reads >= N / 500, `only ${reads} reads: not streamed in batches of 500`)
      const { rows } = await client.query('SELECT 1 AS one')
      assert.equal(rows[0].one, 1, 'connection unusable after the cursor')
      return `${ids.size} rows in ${reads} reads, sum ${total}`
    } finally {
      await client.end()
    }
  })

  await test('SUBSCRIBE cursor with FETCH ... WITH (timeout)', async () => {
    const client = await connect()
    try {
      const key = (r) => `${r.mz_diff}|${r.id}|${r.name}|${r.amount}`
      await client.query('BEGIN')
      await client.query(`DECLARE sub CURSOR FOR SUBSCRIBE ${V} WITH (SNAPSHOT = true)`)
      const snap = (await client.query("FETCH ALL sub WITH (timeout = '1s')")).rows
      assert.deepEqual(snap.map(key).sort(), ['1|1|row 1|3', '1|2|row 2|6', '1|3|row 3|9'],
        `snapshot rows ${JSON.stringify(snap)}`)

      await admin.query(`UPDATE ${T} SET amount = 1000 WHERE id = 3`)
      await admin.query('FLUSH')
      const change = (await client.query("FETCH ALL sub WITH (timeout = '2s')")).rows
      assert.deepEqual(change.map(key).sort(), ['-1|3|row 3|9', '1|3|row 3|1000'],
        `after UPDATE + FLUSH got ${JSON.stringify(change)}`)
      const snapTs = Math.max(...snap.map((r) => Number(r.mz_timestamp)))
      assert.ok(change.every((r) => Number(r.mz_timestamp) > snapTs), 'update not after the snapshot')

      const t0 = Date.now()
      const none = (await client.query("FETCH ALL sub WITH (timeout = '0s')")).rows
      const took = Date.now() - t0
      assert.deepEqual(none, [], `timeout='0s' with nothing new gave ${JSON.stringify(none)}`)
      assert.ok(took < 500, `FETCH ... WITH (timeout = '0s') took ${took} ms`)
      await client.query('COMMIT')
      return `3 snapshot rows, -1/+1 pair, empty 0s fetch in ${took} ms`
    } finally {
      await client.end()
    }
  })

  await admin.query(`DROP MATERIALIZED VIEW ${V}`)
  await admin.query(`DROP TABLE ${T}`)
  await admin.end()
  finish('pg_cursor')
}

main().catch((e) => {
  console.error(`pg_cursor: FAIL: ${e.stack}`)
  process.exit(1)
})
