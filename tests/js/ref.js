#!/usr/bin/env node
// The hypercore 1.8.0 reference peer that hyperfs's tests and benchmarks drive.
//
//   ids                     stdin: {"blocks": [hex, ...]} per line -> {"id": hex|null, "blocks": n}
//   seed  (--file F --block-size N | --blocks-json F) [--port P] [--host H] [--ext NAME]...
//         -> {"event":"listening","id":..,"blocks":..,"port":..}, then serves until killed
//   fetch --connect HOST:PORT [--connect ...] --id ID [--block I] [--out F] [--listen P]
//         [--host H] [--ext NAME]...
//         -> {"event":"done","blocks":..,"bytes":..,"seconds":..}; exits 0 unless --listen,
//            in which case it keeps serving what it fetched (for chains JS -> X -> JS)
//   peer  [--feeds-json F] [--port P] [--host H]: has the feeds of F ({"feeds": [[hex, ...],
//         ...]}) open, in that order, and listens
//         -> {"event":"listening","ids":[..],"port":..}; then does what each stdin line says,
//            and exits when stdin closes:
//            {"op":"connect","to":"HOST:PORT"}  dial (a "handshake" event once it is up)
//            {"op":"fetch","id":ID,"block":I}   open feed ID (if not open) and get block I
//                                               from the peers it has: {"event":"block",
//                                               "id":ID,"index":I,"hex":..}
//            {"op":"drop"}                      close every connection it has:
//                                               {"event":"dropped","connections":n}
//
// stdout carries JSON lines only; diagnostics go to stderr; failures exit non-zero.
// Every TCP socket gets setNoDelay(true): without it, Nagle + delayed ACKs stall the
// request/response ping-pong of the protocol at ~25 requests/s.
'use strict'
process.noDeprecation = true // hypercore 1.x calls new Buffer(); keep stderr for real errors

var fs = require('fs')
var net = require('net')
var hypercore = require('hypercore')
var memdb = require('memdb')

function emit (obj) { process.stdout.write(JSON.stringify(obj) + '\n') }

function fail (err) {
  var msg = err && err.message ? err.message : String(err)
  if (process.env.REFJS_DEBUG && err && err.stack) msg = err.stack
  process.stderr.write('ref.js: ' + msg + '\n')
  process.exit(1) // at once: callers rely on fail() not returning
}

// process.exit() can drop stdout still queued for a full pipe; leave once it has drained.
function quit (code) {
  process.stdout.write('', function () { process.exit(code) })
}

function parseArgs (argv) {
  var opts = {_: [], ext: [], connect: []}
  for (var i = 0; i < argv.length; i++) {
    var a = argv[i]
    if (a.slice(0, 2) !== '--') { opts._.push(a); continue }
    var key = a.slice(2).replace(/-/g, '_')
    var val = argv[++i]
    if (val === undefined) fail(new Error('missing value for ' + a))
    if (Array.isArray(opts[key])) opts[key].push(val)
    else opts[key] = val
  }
  return opts
}

function makeCore (exts) {
  var core = hypercore(memdb())
  exts.forEach(function (name) { core.use(name) }) // must precede createPeerStream
  return core
}

// Append blocks in chunks (one huge leveldb batch is slow), then finalize -> feed id.
function buildFeed (core, blocks, cb) {
  var feed = core.add()
  var CHUNK = 1024
  var i = 0
  next()
  function next (err) {
    if (err) return cb(err)
    if (i >= blocks.length) return feed.finalize(function (err) { cb(err, feed) })
    var chunk = blocks.slice(i, i + CHUNK)
    i += CHUNK
    feed.append(chunk, next)
  }
}

function splitFile (file, size) {
  var buf = fs.readFileSync(file)
  var blocks = []
  for (var off = 0; off < buf.length; off += size) blocks.push(buf.slice(off, off + size))
  return blocks
}

// Wire a socket to a fresh peer stream; ping/pong and other extension traffic is logged.
function attach (core, socket, exts, hooks) {
  socket.setNoDelay(true)
  var who = 'peer'
  socket.on('connect', function () { who = socket.remoteAddress + ':' + socket.remotePort })
  if (socket.remotePort) who = socket.remoteAddress + ':' + socket.remotePort
  var stream = core.createPeerStream()
  var dead = false
  function kill (err) {
    if (dead) return
    dead = true
    if (err) process.stderr.write('ref.js: ' + who + ': ' + err.message + '\n')
    socket.destroy()
    stream.destroy()
    if (hooks && hooks.onclose) hooks.onclose()
  }
  socket.on('error', kill)
  stream.on('error', kill)
  socket.on('close', function () { kill() })
  socket.pipe(stream).pipe(socket)

  exts.forEach(function (name) {
    stream.on(name, function (msg) {
      if (name !== 'ping') return emit({event: 'ext', name: name, hex: msg.toString('hex')})
      if (msg[0] === 0) {
        emit({event: 'ping'})
        stream.send('ping', Buffer.from([1]))
      } else if (msg[0] === 1) {
        emit({event: 'pong'})
        if (hooks && hooks.onpong) hooks.onpong()
      }
    })
  })
  stream.on('handshake', function () {
    var sent = exts.indexOf('ping') > -1 && stream.remoteSupports('ping')
    if (sent) stream.send('ping', Buffer.from([0]))
    emit({event: 'handshake', remote_id: stream.remoteId.toString('hex'), ping_sent: sent})
    if (hooks && hooks.onhandshake) hooks.onhandshake(sent)
  })
  return stream
}

function listen (core, port, host, exts, cb, onsocket) {
  var server = net.createServer(function (socket) {
    attach(core, socket, exts)
    if (onsocket) onsocket(socket)
  })
  server.on('error', fail)
  server.listen(port, host, function () { cb(server.address().port) })
}

function cmdIds () {
  var lines = fs.readFileSync(0, 'utf-8').split('\n').filter(function (l) { return l.trim() })
  var i = 0
  next()
  function next () {
    if (i >= lines.length) return
    var blocks = JSON.parse(lines[i++]).blocks.map(function (h) { return Buffer.from(h, 'hex') })
    buildFeed(makeCore([]), blocks, function (err, feed) {
      if (err) fail(err)
      emit({id: feed.id ? feed.id.toString('hex') : null, blocks: feed.blocks})
      next()
    })
  }
}

function cmdSeed (o) {
  var blocks
  if (o.blocks_json) {
    blocks = JSON.parse(fs.readFileSync(o.blocks_json, 'utf-8')).blocks.map(function (h) { return Buffer.from(h, 'hex') })
  } else {
    if (!o.file || !o.block_size) fail(new Error('seed needs --file and --block-size (or --blocks-json)'))
    blocks = splitFile(o.file, Number(o.block_size))
  }
  if (!blocks.length) fail(new Error('a feed with zero blocks has no id'))
  var core = makeCore(o.ext)
  buildFeed(core, blocks, function (err, feed) {
    if (err) fail(err)
    listen(core, Number(o.port || 0), o.host || '127.0.0.1', o.ext, function (port) {
      emit({event: 'listening', id: feed.id.toString('hex'), blocks: feed.blocks, port: port})
    })
  })
}

function cmdFetch (o) {
  if (!o.id || !o.connect.length) fail(new Error('fetch needs --id and --connect HOST:PORT'))
  var core = makeCore(o.ext)
  var feed = core.get(o.id)
  var wantPing = o.ext.indexOf('ping') > -1
  var pongsOwed = 0
  var fetched = false
  var live = 0
  var start = 0
  var seconds = 0

  feed.open(function (err) {
    if (err) fail(err)
    if (o.listen !== undefined) {
      listen(core, Number(o.listen), o.host || '127.0.0.1', o.ext, function (port) {
        emit({event: 'listening', id: o.id, port: port})
        connectAll()
      })
    } else {
      connectAll()
    }
  })

  function connectAll () {
    start = process.hrtime.bigint()
    o.connect.forEach(function (hp) {
      var idx = hp.lastIndexOf(':')
      var socket = net.connect(Number(hp.slice(idx + 1)), hp.slice(0, idx))
      live++
      attach(core, socket, o.ext, {
        onhandshake: function (sent) { if (sent) pongsOwed++ },
        onpong: function () { pongsOwed--; maybeFinish() },
        onclose: function () {
          if (--live === 0 && !fetched) fail(new Error('all connections closed before the fetch completed'))
        }
      })
    })
    if (o.block !== undefined) fetchBlock(Number(o.block))
    else fetchAll()
  }

  function elapsed () { return Number(process.hrtime.bigint() - start) / 1e9 }

  function fetchBlock (index) {
    feed.get(index, function (err, data) {
      if (err) fail(err)
      seconds = elapsed()
      if (!data) fail(new Error('block ' + index + ' is beyond the feed end (' + feed.blocks + ' blocks)'))
      if (o.out) fs.writeFileSync(o.out, data)
      else emit({event: 'block', index: index, hex: data.toString('hex')})
      finish(1, data.length)
    })
  }

  // Let the swarm download everything the remote has (its own random-order strategy);
  // done once every block up to feed.blocks (known after the first verified response) is in.
  function fetchAll () {
    var ptr = 0
    feed.on('put', check)
    function check () {
      if (!feed.blocks) return
      while (ptr < feed.blocks && feed.has(ptr)) ptr++
      if (ptr < feed.blocks) return
      feed.removeListener('put', check)
      seconds = elapsed()
      readBack()
    }
  }

  function readBack () {
    var out = o.out ? fs.openSync(o.out, 'w') : null
    var hex = []
    var bytes = 0
    var i = 0
    next()
    function next () {
      if (i >= feed.blocks) {
        if (out !== null) fs.closeSync(out)
        else emit({event: 'data', blocks: hex})
        return finish(feed.blocks, bytes)
      }
      feed.get(i++, function (err, data) {
        if (err) fail(err)
        bytes += data.length
        if (out !== null) fs.writeSync(out, data)
        else hex.push(data.toString('hex'))
        next()
      })
    }
  }

  var result = null
  function finish (blocks, bytes) {
    fetched = true
    result = {event: 'done', blocks: blocks, bytes: bytes, seconds: seconds,
      mb_per_s: bytes / 1e6 / seconds, blocks_per_s: blocks / seconds}
    maybeFinish()
  }

  function maybeFinish () {
    if (!result || (wantPing && pongsOwed > 0)) return
    emit(result)
    result = null
    if (o.listen === undefined) quit(0)
  }
}

// Feeds built one after the other, so the swarm opens (and Joins) them in this order.
function buildFeeds (core, feeds, cb) {
  var built = []
  next()
  function next () {
    if (built.length === feeds.length) return cb(built)
    var blocks = feeds[built.length].map(function (h) { return Buffer.from(h, 'hex') })
    buildFeed(core, blocks, function (err, feed) {
      if (err) fail(err)
      built.push(feed)
      next()
    })
  }
}

// A long-lived peer the test steers: the orderings of connecting, opening feeds and
// dropping connections that one-shot seed and fetch cannot make.
function cmdPeer (o) {
  var core = makeCore([])
  var feeds = o.feeds_json ? JSON.parse(fs.readFileSync(o.feeds_json, 'utf-8')).feeds : []
  var sockets = []
  function track (socket) {
    sockets.push(socket)
    socket.on('close', function () { sockets.splice(sockets.indexOf(socket), 1) })
  }
  var ops = {
    connect: function (cmd) {
      var idx = cmd.to.lastIndexOf(':')
      var socket = net.connect(Number(cmd.to.slice(idx + 1)), cmd.to.slice(0, idx))
      attach(core, socket, [])
      track(socket)
    },
    fetch: function (cmd) {
      var feed = core.get(cmd.id)
      feed.get(cmd.block, function (err, data) {
        if (err) fail(err)
        if (!data) fail(new Error('block ' + cmd.block + ' is beyond the end of ' + cmd.id))
        emit({event: 'block', id: cmd.id, index: cmd.block, hex: data.toString('hex')})
      })
    },
    drop: function () {
      var n = sockets.length
      sockets.slice().forEach(function (socket) { socket.destroy() })
      emit({event: 'dropped', connections: n})
    }
  }
  buildFeeds(core, feeds, function (built) {
    listen(core, Number(o.port || 0), o.host || '127.0.0.1', [], function (port) {
      var ids = built.map(function (feed) { return feed.id.toString('hex') })
      emit({event: 'listening', ids: ids, port: port})
      var lines = require('readline').createInterface({input: process.stdin})
      lines.on('line', function (line) {
        if (!line.trim()) return
        var cmd = JSON.parse(line)
        if (!ops[cmd.op]) fail(new Error('unknown op ' + cmd.op))
        ops[cmd.op](cmd)
      })
      lines.on('close', function () { quit(0) })
    }, track)
  })
}

var opts = parseArgs(process.argv.slice(2))
var cmd = opts._[0]
if (cmd === 'ids') cmdIds()
else if (cmd === 'seed') cmdSeed(opts)
else if (cmd === 'fetch') cmdFetch(opts)
else if (cmd === 'peer') cmdPeer(opts)
else fail(new Error('usage: ref.js ids|seed|fetch|peer [options] (see the header of ref.js)'))
