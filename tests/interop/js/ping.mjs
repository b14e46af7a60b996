// A js-libp2p peer for p2pid's interoperability tests.
//
// Dial mode:
//   node ping.mjs [--count N] [--timeout SECONDS] [--security noise|plaintext] MULTIADDR
//
// MULTIADDR must end in /p2p/<PeerId>. The node dials it over TCP (Noise + Yamux, or
// plaintext + Yamux with --security plaintext), runs identify, pings COUNT times and prints
// ONE JSON line on stdout, then exits:
//
//   {"ok": true, "peer": "...", "agent": "...", "protocols": [...], "rtts_ms": [...], ...}
//   {"ok": false, "error": "..."}                       (exit status 1; 2 on the overall timeout)
//
// rtts_ms are measured here with performance.now() around each ping (the ping service only
// reports whole milliseconds, which is 0 on a fast loopback); each one includes opening and
// negotiating the ping stream, as js-libp2p opens a new stream per ping.
//
// Listen mode (the other direction: the p2pid node dials this one):
//   node ping.mjs --listen /ip4/127.0.0.1/tcp/0 [--timeout SECONDS]
//
// Serves identify and ping (Noise + Yamux), prints ONE JSON line once listening,
//   {"ok": true, "peer": "...", "listening": ["/ip4/127.0.0.1/tcp/PORT/p2p/...", ...]}
// then runs until its stdin closes (exit 0) or the timeout passes (exit 2).
//
// Diagnostics go to stderr; nothing but the result goes to stdout.

import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { plaintext } from '@libp2p/plaintext'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

// Node 20 lacks Promise.withResolvers (Node 22+), which it-queue (under libp2p's peer store
// lock, mortice 3.3) calls at run time. Every other API these packages use exists in Node 20.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

let finished = false

/** Print the one result line and exit; later calls are ignored. */
function finish (result, code) {
  if (finished) return
  finished = true
  process.stdout.write(JSON.stringify(result) + '\n')
  process.exit(code)
}

function errorText (err) {
  if (err == null) return 'unknown error'
  const name = err.name != null && err.name !== 'Error' ? `${err.name}: ` : ''
  let text = `${name}${err.message ?? String(err)}`
  if (Array.isArray(err.errors) && err.errors.length > 0) {
    text += ' [' + err.errors.map(errorText).join('; ') + ']'
  }
  return text
}

function parseCommandLine () {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      count: { type: 'string', default: '3' },
      timeout: { type: 'string', default: '30' },
      security: { type: 'string', default: 'noise' },
      listen: { type: 'string' }
    }
  })
  const timeoutS = Number.parseFloat(values.timeout)
  if (!(timeoutS > 0)) throw new Error(`bad --timeout: ${values.timeout}`)
  if (values.listen != null) {
    if (positionals.length !== 0) throw new Error('--listen takes no target MULTIADDR')
    return { listen: multiaddr(values.listen), timeoutMs: timeoutS * 1000 }
  }
  if (positionals.length !== 1) {
    throw new Error('usage: node ping.mjs [--count N] [--timeout S] [--security noise|plaintext] MULTIADDR')
  }
  const count = Number.parseInt(values.count, 10)
  if (!Number.isInteger(count) || count < 1) throw new Error(`bad --count: ${values.count}`)
  if (!['noise', 'plaintext'].includes(values.security)) {
    throw new Error(`bad --security: ${values.security}`)
  }
  const target = multiaddr(positionals[0])
  if (target.getPeerId() == null) throw new Error(`target has no /p2p/<PeerId>: ${positionals[0]}`)
  return { target, count, timeoutMs: timeoutS * 1000, security: values.security }
}

async function run ({ target, count, timeoutMs, security }) {
  const signal = AbortSignal.timeout(timeoutMs)
  const node = await createLibp2p({
    addresses: { listen: [] }, // dial only
    transports: [tcp()],
    connectionEncrypters: [security === 'plaintext' ? plaintext() : noise()],
    streamMuxers: [yamux()],
    services: {
      // identify is run explicitly below, so its result is the one reported
      identify: identify({ runOnConnectionOpen: false }),
      ping: ping()
    }
  })
  try {
    const started = performance.now()
    const connection = await node.dial(target, { signal })
    const dialMs = performance.now() - started
    const info = await node.services.identify.identify(connection, { signal })
    const rtts = []
    for (let i = 0; i < count; i++) {
      const t0 = performance.now()
      await node.services.ping.ping(target, { signal })
      rtts.push(Number((performance.now() - t0).toFixed(3)))
    }
    return {
      ok: true,
      peer: connection.remotePeer.toString(),
      agent: info.agentVersion ?? null,
      protocol_version: info.protocolVersion ?? null,
      protocols: info.protocols,
      listen_addrs: info.listenAddrs.map(String),
      security: connection.encryption ?? null,
      muxer: connection.multiplexer ?? null,
      dial_ms: Number(dialMs.toFixed(3)),
      rtts_ms: rtts
    }
  } finally {
    // stop() must not outlive the result: bound it
    await Promise.race([node.stop(), new Promise(resolve => setTimeout(resolve, 2000).unref())])
  }
}

async function serve ({ listen }) {
  const node = await createLibp2p({
    addresses: { listen: [listen.toString()] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), ping: ping() }
  })
  const stdinClosed = new Promise(resolve => {
    process.stdin.on('end', resolve)
    process.stdin.on('close', resolve)
    process.stdin.on('error', resolve)
    process.stdin.resume()
  })
  // not finish(): the process keeps serving after this line
  process.stdout.write(JSON.stringify({
    ok: true,
    peer: node.peerId.toString(),
    listening: node.getMultiaddrs().map(String)
  }) + '\n')
  await stdinClosed
  await Promise.race([node.stop(), new Promise(resolve => setTimeout(resolve, 2000).unref())])
  finished = true
  process.exit(0)
}

let options
try {
  options = parseCommandLine()
} catch (err) {
  finish({ ok: false, error: errorText(err) }, 1)
}
// A last resort if something ignores the abort signal.
setTimeout(() => {
  finish({ ok: false, error: `timed out after ${options.timeoutMs / 1000} s` }, 2)
}, options.timeoutMs + 3000).unref()

try {
  if (options.listen != null) {
    await serve(options)
  } else {
    finish(await run(options), 0)
  }
} catch (err) {
  process.stderr.write(`ping.mjs: ${err?.stack ?? err}\n`)
  finish({ ok: false, error: errorText(err) }, 1)
}
