// node-postgres logging in to Eddy with SCRAM-SHA-256 over TLS, verifying
// the server against the test CA; a wrong password is 28P01.
//
// Usage: node auth.js PORT CA_FILE  (role `app`, password `app-secret`)
'use strict'
const fs = require('fs')
const { Client } = require('pg')
const { test, finish } = require('./harness')

const port = Number(process.argv[2])
const ca = fs.readFileSync(process.argv[3], 'utf8')
const config = (password) => ({
  host: 'localhost',
  port,
  user: 'app',
  password,
  database: 'eddy',
  ssl: { ca, rejectUnauthorized: true },
})

async function main() {
  await test('node-postgres logs in with SCRAM over verified TLS', async () => {
    const client = new Client(config('app-secret'))
    await client.connect()
    try {
      const { rows } = await client.query('SELECT current_user AS u')
      if (rows[0].u !== 'app') throw new Error(`current_user ${rows[0].u}`)
      if (!client.connection.stream.encrypted) throw new Error('no TLS')
      const { rows: numbers } = await client.query('SELECT n FROM auth_numbers ORDER BY n')
      if (numbers.length !== 2) throw new Error(`rows ${JSON.stringify(numbers)}`)
      return `${rows[0].u} over TLS, ${numbers.length} rows`
    } finally {
      await client.end()
    }
  })
  await test('node-postgres gets 28P01 for a wrong password', async () => {
    const client = new Client(config('nope'))
    try {
      await client.connect()
    } catch (e) {
      if (e.code !== '28P01') throw new Error(`code ${e.code}: ${e.message}`)
      return e.message
    }
    await client.end()
    throw new Error('a wrong password logged in')
  })
  finish('node-auth')
}

main()
