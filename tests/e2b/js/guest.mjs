// Starts and stops a hutch-guest for the JS SDK tests.
//
// The npm SDK's debug mode (E2B_DEBUG=true, or `debug: true`) skips the
// control plane and talks to envd at http://localhost:49983, like the Python
// SDK: so the guest must listen on exactly that port.
// 1. Refuse to start if something already listens there.
// 2. Spawn $HUTCH_GUEST_BIN --listen 127.0.0.1:49983 [--access-token T],
//    its output appended to a log file.
// 3. Poll GET /health until it answers 2xx, with a deadline (no fixed sleep).
// Users come from a copy of /etc/passwd and /etc/group in which root's home is
// an empty temp directory (`--etc-root`), so the host's root dotfiles do not
// run in every `bash -l` the SDK starts (see py/conftest.py).
import { spawn } from 'node:child_process'
import { createConnection } from 'node:net'
import { openSync, closeSync, mkdtempSync, readFileSync, writeFileSync, copyFileSync, mkdirSync, chmodSync, accessSync, constants } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

export const PORT = 49983
export const BASE_URL = `http://127.0.0.1:${PORT}`
const READY_DEADLINE_MS = 10_000

function portOpen() {
  return new Promise((done) => {
    const s = createConnection({ host: '127.0.0.1', port: PORT })
    s.once('connect', () => { s.destroy(); done(true) })
    s.once('error', () => done(false))
  })
}

async function healthy() {
  try {
    const r = await fetch(`${BASE_URL}/health`, { signal: AbortSignal.timeout(1000) })
    return r.ok
  } catch {
    return false
  }
}

export function makeEtcRoot() {
  const root = mkdtempSync(join(tmpdir(), 'hutch-e2b-etc-'))
  chmodSync(root, 0o755) // passwd must be readable whichever user a request runs as
  const home = join(root, 'root-home')
  mkdirSync(home, { mode: 0o700 })
  mkdirSync(join(root, 'etc'))
  const passwd = readFileSync('/etc/passwd', 'utf8').split('\n').map((line) => {
    const f = line.split(':')
    if (f.length === 7 && f[2] === '0') f[5] = home
    return f.join(':')
  })
  writeFileSync(join(root, 'etc', 'passwd'), passwd.join('\n'))
  copyFileSync('/etc/group', join(root, 'etc', 'group'))
  return { root, home }
}

export async function startGuest({ token } = {}) {
  const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
  const bin = process.env.HUTCH_GUEST_BIN || join(repo, 'target', 'debug', 'hutch-guest')
  try {
    accessSync(bin, constants.X_OK)
  } catch {
    throw new Error(`prerequisite missing: guest binary ${bin} (cargo build -p hutch-guest, or set HUTCH_GUEST_BIN)`)
  }
  if (await portOpen()) throw new Error(`prerequisite missing: 127.0.0.1:${PORT} is already in use`)
  const logDir = process.env.HUTCH_E2B_LOG_DIR || mkdtempSync(join(tmpdir(), 'hutch-e2b-logs.'))
  const logPath = join(logDir, `guest-js-${process.pid}-${token ? 'token' : 'open'}.log`)
  const log = openSync(logPath, 'a')
  const etc = makeEtcRoot()
  const args = ['--listen', `127.0.0.1:${PORT}`, '--etc-root', etc.root, ...(token ? ['--access-token', token] : [])]
  const child = spawn(bin, args, { stdio: ['ignore', log, log], env: { RUST_LOG: 'info', ...process.env } })
  closeSync(log)
  let exited = null
  child.once('exit', (code, signal) => { exited = { code, signal } })
  const tail = () => readFileSync(logPath, 'utf8').split('\n').slice(-40).join('\n')
  const deadline = Date.now() + READY_DEADLINE_MS
  while (Date.now() < deadline) {
    if (exited) throw new Error(`hutch-guest exited (${JSON.stringify(exited)}) before serving /health:\n${tail()}`)
    if (await healthy()) {
      return {
        logPath,
        rootHome: etc.home,
        tail,
        async stop() {
          if (exited) return
          const gone = new Promise((done) => child.once('exit', done))
          child.kill('SIGTERM')
          const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
          await gone
          clearTimeout(timer)
        },
      }
    }
    await new Promise((r) => setTimeout(r, 20))
  }
  child.kill('SIGKILL')
  throw new Error(`hutch-guest did not answer /health within ${READY_DEADLINE_MS} ms:\n${tail()}`)
}
