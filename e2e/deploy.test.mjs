// examples/deploy against a real PostgreSQL: roles.sql creates the roles from passwords in
// the environment, `hourofci-collector migrate` sets up the schema, and the writer role can
// log answers through the functions but cannot touch the tables. Then the example's
// pg_hba.conf goes on top of the throwaway cluster's own: the writer gets in over the Unix
// socket only (the collector writes with the README's socket URL), never over TCP. The
// systemd unit is checked with `systemd-analyze verify` and for the limits it must set.

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

  // examples/deploy/pg_hba.conf, first in the cluster's file (first match wins).
  const hbaFile = await pg.json("postgres", "SELECT to_json(current_setting('hba_file'))");
  const socketDir = (await pg.json("postgres", "SELECT to_json(current_setting('unix_socket_directories'))")).split(",")[0].trim();
  const example = fs.readFileSync(path.join(examplesDir, "deploy/pg_hba.conf"), "utf8");
  const active = example.split("\n").filter((l) => l.trim() && !l.trim().startsWith("#"));
  for (const line of active) {
    assert.doesNotMatch(line, /0\.0\.0\.0\/0|::\/0/, `pg_hba.conf must not let anyone in from everywhere: ${line}`);
    if (/\bhourofciuser\b/.test(line)) assert.match(line, /^(local\s+hourofci\s|host\s+all\s+hourofciuser\s+all\s+reject|local\s+all\s+hourofciuser\s+reject)/, line);
  }
  fs.writeFileSync(hbaFile, example + "\n" + fs.readFileSync(hbaFile, "utf8"));
  assert.equal(await pg.json("postgres", "SELECT to_json(pg_reload_conf())"), true);
  const errors = await pg.json("postgres", "SELECT coalesce(json_agg(line_number || ': ' || error), '[]') FROM pg_hba_file_rules WHERE error IS NOT NULL");
  assert.deepEqual(errors, [], "PostgreSQL must accept every line of the example pg_hba.conf");

  const viaSocket = (db, sql) => run(psql, ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", socketDir, "-p", String(pg.port), "-U", "hourofciuser", "-d", db, "-c", sql], {
    env: { ...env, PGPASSWORD: writerPassword },
  });
  // The reload is asynchronous: wait until the writer is turned away over TCP (loopback).
  await waitFor(() => asWriter("SELECT 1").then(() => false, (e) => /pg_hba\.conf rejects connection/.test(e.stderr || e.message)), {
    timeoutMs: 30_000, describe: "the writer was never rejected over TCP after loading the example pg_hba.conf",
  });
  await viaSocket("hourofci", "SELECT logging('md5', current_date, localtime, 'gateway', 'gateway', '1B', 'over the socket')");
  await assert.rejects(viaSocket("postgres", "SELECT 1"), /pg_hba\.conf rejects connection/, "the writer must reach no other database");

  // The collector with the README's URL (section 3): over the socket, a legacy GET is stored.
  const port = await freePort();
  const socketUrl = `postgres://hourofciuser:${encodeURIComponent(writerPassword)}@localhost:${pg.port}/hourofci?host=${encodeURIComponent(socketDir)}`;
  const dir = tmpDir("deploy-socket");
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const urlFile = path.join(dir, "database-url");
  fs.writeFileSync(urlFile, socketUrl + "\n", { mode: 0o600 });
  const collector = spawn(prereq.collector, ["serve", "--bind", `127.0.0.1:${port}`, "--database-url-file", urlFile], { stdio: "ignore" });
  t.after(() => collector.kill("SIGKILL"));
  const answer = await waitFor(async () => {
    const res = await fetch(`http://127.0.0.1:${port}/3b5d5c3712955042212316173ccf37be/gateway/beginner/1C/via%20the%20socket`).catch(() => null);
    return res && res.status === 200 && res;
  }, { timeoutMs: 60_000, describe: "the collector never stored an answer through the socket URL" });
  assert.equal(answer.headers.get("access-control-allow-origin"), "*", "legacy GETs answer every origin by default");
  const all = await pg.json("hourofci", "SELECT json_agg(answer ORDER BY id) FROM loggingtable");
  assert.deepEqual(all, ["from the writer", "over the socket", "via the socket"]);
});

test("deploy: the systemd unit verifies and sets its limits and credentials", async (t) => {
  const analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].find((p) => fs.existsSync(p)) || null;
  const prereq = requireAll(t, ["analyze"], { analyze: { path: analyze, how: "systemd-analyze (Debian package systemd)" } });
  if (!prereq) return;
  const unitText = fs.readFileSync(path.join(examplesDir, "deploy/hourofci-collector.service"), "utf8");
  const settings = unitText.split("\n").filter((l) => /^[A-Za-z]+=/.test(l));
  const has = (re) => settings.some((l) => re.test(l));
  assert.ok(has(/^LimitNOFILE=\d{4,}$/), "LimitNOFILE must leave room for --max-connections");
  assert.ok(has(/^MemoryMax=\d+[KMG]$/), "MemoryMax must cap the service");
  assert.ok(has(/^LoadCredential=tls-key:/) && has(/^LoadCredential=tls-cert:/) && has(/^LoadCredential=database-url:/), "secrets arrive as credentials");
  assert.ok(!has(/^SupplementaryGroups=/), "no group giving access to other keys on the host");
  const dir = tmpDir("unit");
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // The binary is not installed here; everything else is checked as written.
  const unitFile = path.join(dir, "hourofci-collector.service");
  fs.writeFileSync(unitFile, unitText.replace("/usr/local/bin/hourofci-collector", "/bin/true"));
  const { stdout, stderr } = await run(prereq.analyze, ["verify", "--man=no", unitFile]);
  assert.equal((stdout + stderr).trim(), "", "systemd-analyze verify must find nothing to say");
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
