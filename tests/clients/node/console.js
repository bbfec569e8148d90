#!/usr/bin/env node
// Eddy's web console in a real browser: Debian's chromium, headless, driven
// by puppeteer-core. Loads the page, waits for a view's operator graph and
// a live chart with data, writes rows through node-postgres and checks
// that the chart and the graph's row rates move, then saves a screenshot.
//
// Usage: NODE_PATH=$EDDY_CLIENTS_DIR/node/node_modules \
//          node console.js CONSOLE_URL PG_PORT SCREENSHOT_PATH
// Exits 0 when every check passed, 1 otherwise.
'use strict'
const assert = require('assert/strict')
const puppeteer = require('puppeteer-core')
const { Client } = require('pg')

const [URL, PG_PORT, SCREENSHOT] = process.argv.slice(2)
const BROWSER = process.env.CHROMIUM || '/usr/bin/chromium'
const WAIT = { timeout: 30000 }

async function main () {
  const pg = new Client({ host: '127.0.0.1', port: Number(PG_PORT), user: 'eddy', database: 'eddy' })
  await pg.connect()
  await pg.query(`CREATE TABLE console_orders (id BIGINT PRIMARY KEY, customer INT, amount BIGINT)`)
  await pg.query(`INSERT INTO console_orders SELECT i, i % 4, i FROM generate_series(1, 40) AS s(i)`)
  await pg.query(`CREATE MATERIALIZED VIEW console_totals AS
                  SELECT customer, sum(amount) AS total, count(*) AS n FROM console_orders GROUP BY customer`)
  await pg.query(`CREATE STREAM console_bids WITH (connector='nexmark', event_type='bid',
                  events_per_second=200, seed=3)`)

  const browser = await puppeteer.launch({
    executablePath: BROWSER,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage']
  })
  let failed = false
  const page = await browser.newPage()
  const errors = []
  page.on('pageerror', (e) => errors.push(String(e)))
  try {
    await page.setViewport({ width: 1400, height: 1000 })
    await page.goto(`${URL}#console_totals`, { waitUntil: 'load' })

    // Sources and views are listed with their status.
    await page.waitForFunction(
      () => document.querySelector('#sources')?.textContent.includes('console_bids'), WAIT)
    await page.waitForFunction(
      () => [...document.querySelectorAll('#queries tbody tr')]
        .some((tr) => tr.textContent.includes('console_totals') && tr.textContent.includes('RUNNING')), WAIT)
    const sourceRow = await page.$eval('#sources tbody', (t) => t.textContent)
    assert.match(sourceRow, /nexmark:bid/)

    // The operator graph: project, aggregate and source, one box each.
    await page.waitForFunction(() => document.querySelectorAll('#graph g.op').length === 3, WAIT)
    const boxes = await page.$$eval('#graph g.op title', (ts) => ts.map((t) => t.textContent))
    assert.ok(boxes.some((b) => b.startsWith('Aggregate:')), boxes.join('\n'))
    assert.ok(boxes.some((b) => b.startsWith('Source: table console_orders')), boxes.join('\n'))

    // A live chart of the view's numeric columns, with a few samples.
    const series = '#chart svg.series[data-name="sum(total)"]'
    await page.waitForFunction(
      (s) => Number(document.querySelector(s)?.dataset.points) >= 2, WAIT, series)
    const before = await page.$eval(series, (s) => Number(s.dataset.last))
    assert.equal(before, (40 * 41) / 2)

    // Rows arrive: the chart's value and the graph's rates move.
    await pg.query(`INSERT INTO console_orders SELECT i, i % 4, 1000 FROM generate_series(41, 60) AS s(i)`)
    await page.waitForFunction(
      (s, b) => Number(document.querySelector(s)?.dataset.last) !== b, WAIT, series, before)
    const after = await page.$eval(series, (s) => Number(s.dataset.last))
    assert.equal(after, before + 20 * 1000)
    await page.waitForFunction(
      () => [...document.querySelectorAll('#graph g.op')].some((g) => Number(g.dataset.rate) > 0), WAIT)
    await page.waitForFunction(
      () => document.querySelector('#row-count')?.textContent === '4', WAIT)

    // Another view is picked from the list.
    await pg.query(`CREATE MATERIALIZED VIEW console_bid_count AS SELECT count(*) AS bids FROM console_bids`)
    await page.waitForFunction(
      () => [...document.querySelectorAll('#view-select option')].some((o) => o.value === 'console_bid_count'), WAIT)
    await page.select('#view-select', 'console_bid_count')
    await page.waitForFunction(() => document.querySelectorAll('#graph g.op').length >= 2, WAIT)
    const bids = '#chart svg.series[data-name="bids"]'
    await page.waitForFunction((s) => Number(document.querySelector(s)?.dataset.points) >= 2, WAIT, bids)
    const first = await page.$eval(bids, (s) => Number(s.dataset.last))
    await page.waitForFunction((s, f) => Number(document.querySelector(s)?.dataset.last) > f, WAIT, bids, first)

    // Dead letters have their section.
    await page.waitForSelector('#dead-letters thead', WAIT)
    assert.deepEqual(errors, [])
    await page.select('#view-select', 'console_totals')
    await page.waitForFunction(
      (s) => Number(document.querySelector(s)?.dataset.points) >= 2, WAIT, series)
    console.log('console: ok')
  } catch (e) {
    failed = true
    console.error('console: FAILED', e)
    if (errors.length) console.error('page errors:', errors)
  } finally {
    await page.screenshot({ path: SCREENSHOT, fullPage: true }).catch((e) => console.error(e))
    await browser.close()
    await pg.end()
  }
  process.exit(failed ? 1 : 0)
}

main().catch((e) => { console.error(e); process.exit(1) })
