// Encode messages with the reference's own schema and protobuf library, for byte-exact
// comparison with hyperfs.messages. Reads a JSON array of [name, fields] from stdin, where
// any {"hex": "..."} value stands for a Buffer; prints one hex encoding per line.
// Usage: node encode.js < messages.json
var fs = require('fs')
var path = require('path')
var protobuf = require('protocol-buffers')

var schema = path.join(__dirname, 'node_modules', 'hypercore', 'schema.proto')
var messages = protobuf(fs.readFileSync(schema, 'utf-8'))

function revive (value) {
  if (Array.isArray(value)) return value.map(revive)
  if (value && typeof value === 'object') {
    if (typeof value.hex === 'string') return Buffer.from(value.hex, 'hex')
    var out = {}
    Object.keys(value).forEach(function (k) { out[k] = revive(value[k]) })
    return out
  }
  return value
}

var input = JSON.parse(fs.readFileSync(0, 'utf-8'))
input.forEach(function (entry) {
  var name = entry[0].split('.')
  var encoding = messages[name[0]]
  if (name[1]) encoding = encoding[name[1]]
  process.stdout.write(encoding.encode(revive(entry[1])).toString('hex') + '\n')
})
