#!/usr/bin/env node
// Baseline for hyperfs's local feed benchmarks: how fast hypercore 1.8.0 on memdb appends
// N random SIZE-byte blocks and finalizes (through the documented createWriteStream), and
// reads them all back (createReadStream). Random data, because blocks are stored by hash.
//
//   node bench_core.js N SIZE
//   -> {"blocks":N,"block_size":SIZE,"append_seconds":..,"append_blocks_per_s":..,
//       "append_mb_per_s":..,"read_seconds":..,"read_blocks_per_s":..,"read_mb_per_s":..,"id":..}
'use strict'
process.noDeprecation = true

var crypto = require('crypto')
var hypercore = require('hypercore')
var memdb = require('memdb')

var n = Number(process.argv[2])
var size = Number(process.argv[3])
if (!(n > 0) || !(size > 0)) {
  process.stderr.write('usage: node bench_core.js BLOCKS BLOCK_SIZE\n')
  process.exit(2)
}

var data = crypto.randomBytes(n * size)
var core = hypercore(memdb())
var ws = core.createWriteStream()
var t0 = process.hrtime.bigint()
var i = 0

write()

// Respect backpressure like a real producer would.
function write () {
  while (i < n) {
    var ok = ws.write(data.slice(i * size, (i + 1) * size))
    i++
    if (!ok) return ws.once('drain', write)
  }
  ws.end(appended)
}

function appended () {
  var appendSeconds = secondsSince(t0)
  var t1 = process.hrtime.bigint()
  var count = 0
  var bytes = 0
  var rs = core.createReadStream(ws.id)
  rs.on('data', function (block) {
    if (!block.equals(data.slice(count * size, (count + 1) * size))) fail('block ' + count + ' differs')
    count++
    bytes += block.length
  })
  rs.on('error', fail)
  rs.on('end', function () {
    var readSeconds = secondsSince(t1)
    if (count !== n) fail('read ' + count + ' blocks, expected ' + n)
    process.stdout.write(JSON.stringify({
      blocks: n,
      block_size: size,
      id: ws.id.toString('hex'),
      append_seconds: appendSeconds,
      append_blocks_per_s: n / appendSeconds,
      append_mb_per_s: n * size / 1e6 / appendSeconds,
      read_seconds: readSeconds,
      read_blocks_per_s: n / readSeconds,
      read_mb_per_s: bytes / 1e6 / readSeconds
    }) + '\n')
  })
}

function secondsSince (t) { return Number(process.hrtime.bigint() - t) / 1e9 }

function fail (msg) {
  process.stderr.write('bench_core.js: ' + msg + '\n')
  process.exit(1)
}
