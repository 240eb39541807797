// The real e2b npm SDK, in its debug mode, against hutch-guest on loopback.
//
// Debug mode is `E2B_DEBUG=true` (read by ConnectionConfig at call time; the
// per-call `debug: true` option is the same switch): Sandbox.create()/connect()
// return at once with sandboxId "debug_sandbox_id" and envdVersion 99.99.99,
// and envd is reached at http://localhost:49983 (dist/index.mjs,
// ConnectionConfig.getSandboxUrl / Sandbox.create).
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, chmodSync, rmSync, readFileSync, existsSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Sandbox, CommandExitError, AuthenticationError, FileType, FilesystemEventType } from 'e2b'
import { startGuest } from './guest.mjs'

process.env.E2B_DEBUG = 'true'
delete process.env.E2B_API_URL
delete process.env.E2B_SANDBOX_URL
delete process.env.E2B_DOMAIN

async function eventually(pred, what, deadlineMs = 10_000) {
  const end = Date.now() + deadlineMs
  while (Date.now() < end) {
    if (await pred()) return
    await new Promise((r) => setTimeout(r, 20))
  }
  assert.fail(`timed out waiting for ${what()}`)
}

function freshDir() {
  const d = mkdtempSync(join(tmpdir(), 'hutch-e2b-js-'))
  chmodSync(d, 0o777)
  return d
}

describe('e2b npm SDK against hutch-guest (no token)', () => {
  let guest
  let sbx
  let dir
  before(async () => {
    guest = await startGuest()
    sbx = await Sandbox.create()
    assert.equal(sbx.sandboxId, 'debug_sandbox_id')
    dir = freshDir()
  })
  after(async () => {
    await guest?.stop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  it('commands.run: stdout, stderr, exit code 0', async () => {
    const r = await sbx.commands.run('echo js-out; echo js-err >&2')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'js-out\n')
    assert.equal(r.stderr, 'js-err\n')
  })

  it('commands.run: non-zero exit throws CommandExitError with the code', async () => {
    await assert.rejects(sbx.commands.run('echo partial; exit 5'), (e) => {
      assert.ok(e instanceof CommandExitError, String(e))
      assert.equal(e.exitCode, 5)
      assert.equal(e.stdout, 'partial\n')
      return true
    })
  })

  it('commands.run: envs, cwd, user', async () => {
    const r = await sbx.commands.run('echo "$HUTCH_JS"; pwd; id -u', { envs: { HUTCH_JS: 'yes' }, cwd: dir, user: 'nobody' })
    assert.equal(r.stdout, `yes\n${dir}\n65534\n`)
  })

  it('background + list + kill', async () => {
    const h = await sbx.commands.run('sleep 60', { background: true })
    assert.ok(h.pid > 0)
    const listed = await sbx.commands.list()
    assert.ok(listed.some((p) => p.pid === h.pid), `pid ${h.pid} not listed`)
    assert.equal(await h.kill(), true)
    await assert.rejects(h.wait(), (e) => {
      assert.ok(e instanceof CommandExitError, String(e))
      assert.equal(e.exitCode, -1)
      return true
    })
    assert.equal(await sbx.commands.kill(h.pid), false)
  })

  it('background + sendStdin + wait', async () => {
    const h = await sbx.commands.run('read x; echo got:$x', { background: true, stdin: true })
    await h.sendStdin('from-js\n')
    const r = await h.wait()
    assert.equal(r.stdout, 'got:from-js\n')
  })

  it('files: write, read, list, exists, makeDir, rename, remove', async () => {
    const p = join(dir, 'f', 'a.txt')
    const info = await sbx.files.write(p, 'js file')
    assert.equal(info.path, p)
    assert.equal(readFileSync(p, 'utf8'), 'js file')
    assert.equal(await sbx.files.read(p), 'js file')
    const bytes = await sbx.files.read(p, { format: 'bytes' })
    assert.deepEqual(Buffer.from(bytes), Buffer.from('js file'))

    assert.equal(await sbx.files.makeDir(join(dir, 'f', 'd')), true)
    assert.equal(await sbx.files.makeDir(join(dir, 'f', 'd')), false)
    const entries = await sbx.files.list(join(dir, 'f'))
    const byName = Object.fromEntries(entries.map((e) => [e.name, e]))
    assert.deepEqual(Object.keys(byName).sort(), ['a.txt', 'd'])
    assert.equal(byName['a.txt'].type, FileType.FILE)
    assert.equal(byName.d.type, FileType.DIR)

    assert.equal(await sbx.files.exists(p), true)
    const moved = await sbx.files.rename(p, join(dir, 'f', 'b.txt'))
    assert.equal(moved.name, 'b.txt')
    assert.equal(await sbx.files.exists(p), false)
    await sbx.files.remove(join(dir, 'f'))
    assert.equal(existsSync(join(dir, 'f')), false)
  })

  it('files: multi-file write', async () => {
    const files = [
      { path: join(dir, 'multi', 'one.txt'), data: 'one' },
      { path: join(dir, 'multi', 'two.bin'), data: new Uint8Array([1, 2, 3]) },
    ]
    const infos = await sbx.files.write(files)
    assert.deepEqual(infos.map((i) => i.path).sort(), files.map((f) => f.path).sort())
    assert.equal(readFileSync(files[0].path, 'utf8'), 'one')
    assert.deepEqual([...readFileSync(files[1].path)], [1, 2, 3])
  })

  it('pty: create, input, resize, kill', async () => {
    let out = ''
    const decoder = new TextDecoder()
    const h = await sbx.pty.create({ rows: 24, cols: 80, cwd: dir, onData: (d) => { out += decoder.decode(d, { stream: true }) } })
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size; echo PTY-$TERM\n'))
    await eventually(() => out.includes('24 80') && out.includes('PTY-xterm-256color'), () => `'24 80' in ${JSON.stringify(out)}`)
    await sbx.pty.resize(h.pid, { rows: 33, cols: 99 })
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size\n'))
    await eventually(() => out.includes('33 99'), () => `'33 99' in ${JSON.stringify(out)}`)
    assert.equal(await sbx.pty.kill(h.pid), true)
    await assert.rejects(h.wait(), CommandExitError)
  })

  it('watchDir streams events', async () => {
    const wdir = join(dir, 'watched')
    mkdirSync(wdir)
    const events = []
    const handle = await sbx.files.watchDir(wdir, (e) => events.push(e), { recursive: true })
    try {
      await sbx.files.write(join(wdir, 'new.txt'), 'x')
      writeFileSync(join(wdir, 'local.txt'), 'y')
      await sbx.files.remove(join(wdir, 'new.txt'))
      const has = (name, type) => events.some((e) => e.name === name && e.type === type)
      await eventually(
        () => has('new.txt', FilesystemEventType.CREATE) && has('new.txt', FilesystemEventType.REMOVE) && has('local.txt', FilesystemEventType.CREATE),
        () => `create/remove events in ${JSON.stringify(events)}`,
      )
      // envd writes in place: watchers see only the names the SDK wrote.
      const leaked = [...new Set(events.map((e) => e.name))].filter((n) => !['new.txt', 'local.txt'].includes(n))
      assert.deepEqual(leaked, [], `events name files the SDK never wrote: ${JSON.stringify(events)}`)
      assert.ok(has('new.txt', FilesystemEventType.WRITE), `no WRITE of new.txt in ${JSON.stringify(events)}`)
    } finally {
      await handle.stop()
    }
  })
})

describe('e2b npm SDK against hutch-guest (access token)', () => {
  const token = `hutch-js-${process.pid}-${Date.now()}`
  let guest
  before(async () => { guest = await startGuest({ token }) })
  after(async () => { await guest?.stop() })

  // Debug mode never learns a token (Sandbox.create skips the control plane
  // that hands out envdAccessToken), so build the Sandbox as create() does
  // after a real API call: the constructor with `envdAccessToken`, which the
  // SDK sends as X-Access-Token on every envd request and signs URLs with.
  const withToken = (t) => new Sandbox({ sandboxId: 'debug_sandbox_id', envdVersion: '99.99.99', envdAccessToken: t, debug: true })

  it('the right token works', async () => {
    const r = await withToken(token).commands.run('echo authorised')
    assert.equal(r.stdout, 'authorised\n')
  })

  it('a wrong or missing token is an AuthenticationError', async () => {
    for (const sbx of [withToken('wrong'), await Sandbox.create()]) {
      await assert.rejects(sbx.commands.run('echo no'), AuthenticationError)
      await assert.rejects(sbx.files.read('/etc/hostname'), AuthenticationError)
    }
  })

  it('signed download URL works with plain fetch; tampered is 401', async () => {
    const sbx = withToken(token)
    const url = await sbx.downloadUrl('/etc/hostname', { useSignatureExpiration: 60 })
    const ok = await fetch(url)
    assert.equal(ok.status, 200)
    assert.equal(await ok.text(), readFileSync('/etc/hostname', 'utf8'))
    const bad = new URL(url)
    bad.searchParams.set('signature', 'v1_' + 'A'.repeat(43))
    assert.equal((await fetch(bad)).status, 401)
  })
})
