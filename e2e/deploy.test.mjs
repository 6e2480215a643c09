// examples/deploy against a real PostgreSQL: roles.sql creates the roles from passwords in
// the environment, `hourofci-collector migrate` sets up the schema, and the writer role can
// log answers through the functions but cannot touch the tables. (Which databases it may
// reach at all is pg_hba.conf's job; the throwaway cluster has its own.)

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { requireAll, PgCluster, Collector, examplesDir } from "./lib/harness.mjs";

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
