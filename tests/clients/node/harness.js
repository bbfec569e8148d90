// Check groups for the node-postgres tests: each group runs, reports one
// line, and a failure does not stop the next group.
'use strict'

const results = { passed: 0, failed: 0 }

async function test(name, fn) {
  try {
    console.log(`ok - ${name}: ${await fn()}`)
    results.passed++
  } catch (e) {
    console.log(`FAIL - ${name}: ${e.message}`)
    results.failed++
  }
}

// Prints the summary line and exits, 1 if any group failed.
function finish(name) {
  console.log(`${name}: ${results.passed} passed, ${results.failed} failed`)
  process.exit(results.failed ? 1 : 0)
}

module.exports = { test, finish }
