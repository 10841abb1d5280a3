// A ringgate gateway of a test's own, for the Node suites (tests/js, tests/js/bus, tests/browser):
// free loopback ports, the process spawned with the test's flags, ready once /healthz answers,
// stopped by its PID. Node built-ins only, so every suite's package can import it by path.
//
// Environment: RINGGATE_BIN_PATH (the gateway binary; scripts/test.sh sets it).

import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'

export const BIN = process.env.RINGGATE_BIN_PATH ??
  fileURLToPath(new URL('../../target/release/ringgate', import.meta.url))

/** How long a gateway may take to answer /healthz: a loaded CI box starts it in well under 1 s. */
const READY_MS = 20000

export const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

/** A loopback TCP port nobody listens on at the moment of asking. */
export function freePort () {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/**
 * `ringgate serve` on `port` and `adminPort` (free ones when not given) with the extra flags in
 * `args`. Resolves once /healthz answers; rejects if the process exits first or is not ready
 * within READY_MS (it is then killed). `exited` resolves with the exit code (or signal name).
 */
export async function spawnGateway ({ port, adminPort, args = [], what = 'gateway' } = {}) {
  port ??= await freePort()
  adminPort ??= await freePort()
  const child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--admin-listen', `127.0.0.1:${adminPort}`,
    ...args], { stdio: ['ignore', 'ignore', 'inherit'] })
  const exited = new Promise(resolve => child.once('exit', (code, signal) => resolve(code ?? signal)))
  const admin = `http://127.0.0.1:${adminPort}`
  const gw = {
    port,
    admin,
    child,
    exited,
    /** Sends `signal` unless the process has already exited. */
    kill (signal) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    },
    /** SIGTERM (a drain), SIGKILL if it has not exited 10 s later; resolves with the exit status. */
    async stop () {
      gw.kill('SIGTERM')
      const t = setTimeout(() => gw.kill('SIGKILL'), 10000)
      try { return await exited } finally { clearTimeout(t) }
    }
  }
  let died = false
  exited.then(() => { died = true })
  const deadline = Date.now() + READY_MS
  while (Date.now() < deadline && !died) {
    try {
      const r = await fetch(`${admin}/healthz`, { signal: AbortSignal.timeout(2000) })
      if (r.ok) return gw
    } catch {}
    await sleep(100)
  }
  gw.kill('SIGKILL')
  throw new Error(died
    ? `${what} on ${port} exited (${await exited}) before it was healthy`
    : `${what} on ${port} was not healthy within ${READY_MS} ms`)
}
