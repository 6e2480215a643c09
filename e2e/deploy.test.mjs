// examples/deploy against a real PostgreSQL: roles.sql creates the roles from passwords in
// the environment, `hourofci-collector migrate` sets up the schema, and the writer role can
// log answers through the functions but cannot touch the tables. (Which databases it may
// reach at all is pg_hba.conf's job; the throwaway cluster has its own.)

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import https from "node:https";
import path from "node:path";
import { promisify } from "node:util";
import { requireAll, PgCluster, Collector, examplesDir, freePort, tmpDir, waitFor } from "./lib/harness.mjs";

const run = promisify(execFile);
const ROLES_SQL = path.join(examplesDir, "deploy/roles.sql");

test("deploy: roles.sql + migrate give the writer EXECUTE on the log functions and nothing else", async (t) => {
  const prereq = requireAll(t, ["collector", "pgcluster"]);
  if (!prereq) return;
  const pg = await PgCluster.start(prereq.pgcluster);
  t.after(() => pg.stop());
  const psql = path.join(pg.binDir, "psql");
  const env = { ...process.env, PGCONNECT_TIMEOUT: "10" };
  delete env.HOURCI_ADMIN_PASSWORD;
  delete env.HOURCI_WRITER_PASSWORD;

  await assert.rejects(
    run(psql, ["-X", "-q", "-f", ROLES_SQL, pg.superuserUrl], { env }),
    /HOURCI_ADMIN_PASSWORD is not set/,
    "roles.sql must refuse to run without the passwords in the environment",
  );

  // Awkward passwords: quotes and spaces must survive psql's :'var' quoting.
  const adminPassword = `adm'in "pw" ${Math.random().toString(36).slice(2)}`;
  const writerPassword = `wri'ter ${Math.random().toString(36).slice(2)}`;
  await run(psql, ["-X", "-q", "-f", ROLES_SQL, pg.superuserUrl], {
    env: { ...env, HOURCI_ADMIN_PASSWORD: adminPassword, HOURCI_WRITER_PASSWORD: writerPassword },
  });

  const url = (role, pw) => `postgres://${role}:${encodeURIComponent(pw)}@127.0.0.1:${pg.port}/hourofci`;
  await Collector.migrate(prereq.collector, url("hourofciadmin", adminPassword), "hourofciuser");

  const asWriter = (sql) => run(psql, ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, url("hourofciuser", writerPassword)], { env });
  await asWriter("SELECT logging('md5', current_date, localtime, 'gateway', 'gateway', '1A', 'from the writer')");
  const stored = await pg.json("hourofci", "SELECT json_agg(answer) FROM loggingtable");
  assert.deepEqual(stored, ["from the writer"], "the writer logs through logging()");

  for (const sql of ["SELECT count(*) FROM loggingtable", "INSERT INTO loggingtable (answer) VALUES ('x')", "DELETE FROM loggingtable_test"]) {
    await assert.rejects(asWriter(sql), /permission denied/, `the writer must not be able to run: ${sql}`);
  }

});

// certbot keeps the files in archive/<host>/{fullchain,privkey}N.pem and points the
// live/<host>/ symlinks at the newest; a renewal must reach new connections, no restart.
test("deploy: TLS from certbot's live/ symlinks, renewal served without a restart", async (t) => {
  const prereq = requireAll(t, ["collector", "openssl"], { openssl: { path: ["/usr/bin/openssl", "/bin/openssl"].find((p) => fs.existsSync(p)) || null, how: "the openssl command (Debian package openssl)" } });
  if (!prereq) return;
  const dir = tmpDir("certbot");
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const host = "check.example.test";
  const archive = path.join(dir, "archive", host);
  const live = path.join(dir, "live", host);
  fs.mkdirSync(archive, { recursive: true });
  fs.mkdirSync(live, { recursive: true });

  const issue = async (n) => {
    await run(prereq.openssl, [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
      "-subj", `/CN=${host} ${n}`, "-addext", "subjectAltName=IP:127.0.0.1",
      "-keyout", path.join(archive, `privkey${n}.pem`), "-out", path.join(archive, `fullchain${n}.pem`),
    ]);
    // As certbot does: replace each symlink atomically (new link, then rename over).
    for (const name of ["fullchain", "privkey"]) {
      const tmp = path.join(live, `.${name}.tmp`);
      fs.symlinkSync(path.join("..", "..", "archive", host, `${name}${n}.pem`), tmp);
      fs.renameSync(tmp, path.join(live, `${name}.pem`));
    }
    return fs.readFileSync(path.join(archive, `fullchain${n}.pem`), "utf8");
  };

  const first = await issue(1);
  const port = await freePort();
  const collector = spawn(prereq.collector, [
    "serve", "--bind", `127.0.0.1:${port}`, "--sqlite-path", path.join(dir, "answers.db"),
    "--tls-cert", path.join(live, "fullchain.pem"), "--tls-key", path.join(live, "privkey.pem"), "--tls-reload-secs", "1",
  ], { stdio: "ignore" });
  t.after(() => collector.kill("SIGKILL"));

  // A fresh TLS connection each time; resolves to the served certificate's subject CN.
  const servedCN = (ca) =>
    new Promise((resolve, reject) => {
      const req = https.get({ host: "127.0.0.1", port, path: "/", ca, agent: false }, (res) => {
        const cn = res.socket.getPeerCertificate().subject.CN;
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve({ cn, body }));
      });
      req.on("error", reject);
    });

  const before = await waitFor(() => servedCN(first).catch(() => null), { timeoutMs: 30_000, describe: "the collector never served HTTPS with the first certificate" });
  assert.equal(before.cn, `${host} 1`);
  assert.equal(before.body, "Hello World!");

  const second = await issue(2);
  const after = await waitFor(async () => {
    const r = await servedCN(second).catch(() => null);
    return r && r.cn === `${host} 2` && r;
  }, { timeoutMs: 60_000, describe: "the renewed certificate was never served (the collector must reload the files behind live/ symlinks)" });
  assert.equal(after.body, "Hello World!");
  assert.equal(collector.exitCode, null, "the collector kept running through the renewal");
});
