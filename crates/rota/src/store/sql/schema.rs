//! The schema, written once for every SQL dialect. `dbscripts/*.sql` are this text
//! (`rota schema --db NAME` prints it; a test keeps the files equal).

use super::dialect::Dialect;

/// The schema version this build writes and expects.
///
/// 2: `rota_assignments.version`, the generation that last changed a row, so that nodes
/// re-read only the rows changed since the generation they have seen.
/// 3: `rota_commands` and `rota_command_acks`, the cluster command log (contract 8).
/// 4: `rota_events`, the cluster's event journal (the dashboard's timeline).
/// 5: `rota_cache`, the cluster caches and tasks' own state.
/// 6: `rota_declarations`, what each registration declares, out of `rota_nodes`: a node of
/// 100,000 tasks declares megabytes, which SQLite read and wrote again at every heartbeat.
/// `rota_nodes.declared` stays, holding an empty declaration, for the nodes of version 5
/// still running during a rolling upgrade: they read the new nodes as declaring nothing,
/// so they place nothing on them until a new node leads.
/// 7: `rota_declared_sets`, each distinct set of declarations once, by digest, named by
/// `rota_declarations.digest`: 100 identical nodes of 100,000 tasks stored and read the same
/// megabytes a hundred times. A row without a digest (written by version 6 during a
/// rolling upgrade) still holds its set; version 6 reads a row of ours as declaring nothing.
/// 8: `rota_nodes.session_key`, `ended_at` and `guard`: the key of the node's session lock,
/// when its release ended the registration, and the fingerprint of the node's work guard.
/// A node of version 7 still running in a rolling upgrade holds no key and is never ended;
/// while one leads, a dead node's tasks wait for its expiry, as before.
pub const VERSION: i64 = 8;

/// The statements that create schema version [`VERSION`] from nothing, in order.
pub fn create_statements(dialect: Dialect) -> Vec<String> {
    let (key, int, text, opts) = dialect.types();
    let tables = [
        format!("CREATE TABLE rota_meta (\n  name {key} NOT NULL PRIMARY KEY,\n  value {int} NOT NULL\n){opts}"),
        format!(
            "CREATE TABLE rota_clusters (\n  cluster {key} NOT NULL PRIMARY KEY,\n  generation {int} NOT NULL\n){opts}"
        ),
        format!(
            "CREATE TABLE rota_nodes (\n  cluster {key} NOT NULL,\n  node_id {key} NOT NULL,\n  incarnation {int} NOT NULL,\n  \
             joined_at {int} NOT NULL,\n  heartbeat_at {int} NOT NULL,\n  timeout_ms {int} NOT NULL,\n  \
             leaving {int} NOT NULL,\n  host {key} NOT NULL,\n  process {key} NOT NULL,\n  declared {text} NOT NULL,\n  \
             session_key {int},\n  ended_at {int},\n  guard {key},\n  PRIMARY KEY (cluster, node_id)\n){opts}"
        ),
        declarations_table(dialect),
        declared_sets_table(dialect),
        format!(
            "CREATE TABLE rota_leader (\n  cluster {key} NOT NULL PRIMARY KEY,\n  node_id {key} NOT NULL,\n  \
             incarnation {int} NOT NULL,\n  epoch {int} NOT NULL,\n  since {int} NOT NULL\n){opts}"
        ),
        format!(
            "CREATE TABLE rota_assignments (\n  cluster {key} NOT NULL,\n  task {key} NOT NULL,\n  node_id {key},\n  \
             incarnation {int},\n  token {int} NOT NULL,\n  epoch {int} NOT NULL,\n  assigned_at {int} NOT NULL,\n  placed_at {int} NOT NULL,\n  \
             reason {text},\n  version {int} NOT NULL DEFAULT 0,\n  PRIMARY KEY (cluster, task)\n){opts}"
        ),
        format!(
            "CREATE TABLE rota_fires (\n  cluster {key} NOT NULL,\n  task {key} NOT NULL,\n  instant {int} NOT NULL,\n  \
             slot {key} NOT NULL,\n  node_id {key} NOT NULL,\n  incarnation {int} NOT NULL,\n  token {int} NOT NULL,\n  \
             attempt {int} NOT NULL,\n  outcome {key} NOT NULL,\n  started_at {int},\n  finished_at {int},\n  \
             message {text},\n  PRIMARY KEY (cluster, task, instant, slot)\n){opts}"
        ),
        "CREATE INDEX rota_fires_by_outcome ON rota_fires (cluster, outcome, task)".to_string(),
        "CREATE INDEX rota_fires_by_instant ON rota_fires (cluster, instant)".to_string(),
        ASSIGNMENTS_BY_VERSION.to_string(),
        commands_table(dialect),
        command_acks_table(dialect),
        events_table(dialect),
        EVENTS_BY_TIME.to_string(),
        cache_table(dialect),
        CACHE_BY_AGE.to_string(),
        format!("INSERT INTO rota_meta (name, value) VALUES ('schema_version', {VERSION})"),
    ];
    tables.into_iter().collect()
}

const ASSIGNMENTS_BY_VERSION: &str =
    "CREATE INDEX rota_assignments_by_version ON rota_assignments (cluster, version)";

/// One row per row of `rota_nodes`, written and deleted with it. `digest` names its set in
/// `rota_declared_sets` (added by version 7, so [`create_statements`] adds it the same way).
fn declarations_table(dialect: Dialect) -> String {
    let (key, int, text, opts) = dialect.types();
    format!(
        "CREATE TABLE rota_declarations (\n  cluster {key} NOT NULL,\n  node_id {key} NOT NULL,\n  \
         incarnation {int} NOT NULL,\n  declared {text} NOT NULL,\n  digest {key},\n  PRIMARY KEY (cluster, node_id)\n){opts}"
    )
}

/// Each distinct set of declarations once per cluster. `used_at` (store time of the last
/// join that named it) keeps a purge from deleting a set a join is about to name.
fn declared_sets_table(dialect: Dialect) -> String {
    let (key, int, text, opts) = dialect.types();
    format!(
        "CREATE TABLE rota_declared_sets (\n  cluster {key} NOT NULL,\n  digest {key} NOT NULL,\n  \
         declared {text} NOT NULL,\n  used_at {int} NOT NULL,\n  PRIMARY KEY (cluster, digest)\n){opts}"
    )
}

fn commands_table(dialect: Dialect) -> String {
    let (key, int, text, opts) = dialect.types();
    format!(
        "CREATE TABLE rota_commands (\n  cluster {key} NOT NULL,\n  seq {int} NOT NULL,\n  \
         issued_at {int} NOT NULL,\n  body {text} NOT NULL,\n  PRIMARY KEY (cluster, seq)\n){opts}"
    )
}

fn command_acks_table(dialect: Dialect) -> String {
    let (key, int, text, opts) = dialect.types();
    format!(
        "CREATE TABLE rota_command_acks (\n  cluster {key} NOT NULL,\n  seq {int} NOT NULL,\n  \
         node_id {key} NOT NULL,\n  incarnation {int} NOT NULL,\n  state {key} NOT NULL,\n  \
         message {text} NOT NULL,\n  at {int} NOT NULL,\n  PRIMARY KEY (cluster, seq, node_id)\n){opts}"
    )
}

fn events_table(dialect: Dialect) -> String {
    let (key, int, text, opts) = dialect.types();
    format!(
        "CREATE TABLE rota_events (\n  cluster {key} NOT NULL,\n  id {key} NOT NULL,\n  \
         at {int} NOT NULL,\n  kind {key} NOT NULL,\n  body {text} NOT NULL,\n  \
         PRIMARY KEY (cluster, id)\n){opts}"
    )
}

fn cache_table(dialect: Dialect) -> String {
    let (key, int, _, opts) = dialect.types();
    let (blob, exact) = (dialect.blob(), dialect.exact_key());
    format!(
        "CREATE TABLE rota_cache (\n  cluster {key} NOT NULL,\n  cache {exact} NOT NULL,\n  ckey {exact} NOT NULL,\n  \
         value {blob} NOT NULL,\n  version {int} NOT NULL,\n  expires_at {int},\n  live {int} NOT NULL,\n  \
         updated_at {int} NOT NULL,\n  PRIMARY KEY (cluster, cache, ckey)\n){opts}"
    )
}

/// The purge finds old tombstones and expired entries by age, without scanning (and, on
/// InnoDB, locking) the whole cache.
const CACHE_BY_AGE: &str = "CREATE INDEX rota_cache_by_age ON rota_cache (cluster, updated_at)";

const EVENTS_BY_TIME: &str = "CREATE INDEX rota_events_by_time ON rota_events (cluster, at)";

/// The statements that bring schema version `from` to [`VERSION`], in order (empty when
/// `from` is current). Each step ends by recording its version.
pub fn upgrade_statements(dialect: Dialect, from: i64) -> Vec<String> {
    let (_, int, _, _) = dialect.types();
    let mut out = Vec::new();
    if from < 2 {
        out.push(format!(
            "ALTER TABLE rota_assignments ADD COLUMN version {int} NOT NULL DEFAULT 0"
        ));
        out.push(ASSIGNMENTS_BY_VERSION.to_string());
        out.push("UPDATE rota_meta SET value = 2 WHERE name = 'schema_version'".to_string());
    }
    if from < 3 {
        out.push(commands_table(dialect));
        out.push(command_acks_table(dialect));
        out.push("UPDATE rota_meta SET value = 3 WHERE name = 'schema_version'".to_string());
    }
    if from < 4 {
        out.push(events_table(dialect));
        out.push(EVENTS_BY_TIME.to_string());
        out.push("UPDATE rota_meta SET value = 4 WHERE name = 'schema_version'".to_string());
    }
    if from < 5 {
        out.push(cache_table(dialect));
        out.push(CACHE_BY_AGE.to_string());
        out.push("UPDATE rota_meta SET value = 5 WHERE name = 'schema_version'".to_string());
    }
    if from < 6 {
        out.push(declarations_table(dialect));
        out.push(
            "INSERT INTO rota_declarations (cluster, node_id, incarnation, declared) \
             SELECT cluster, node_id, incarnation, declared FROM rota_nodes"
                .to_string(),
        );
        out.push("UPDATE rota_meta SET value = 6 WHERE name = 'schema_version'".to_string());
    }
    if from < 7 {
        // From before 6, `rota_declarations` was just created with its digest.
        if from == 6 {
            let (key, ..) = dialect.types();
            out.push(format!(
                "ALTER TABLE rota_declarations ADD COLUMN digest {key}"
            ));
        }
        out.push(declared_sets_table(dialect));
        out.push("UPDATE rota_meta SET value = 7 WHERE name = 'schema_version'".to_string());
    }
    if from < 8 {
        out.push(format!(
            "ALTER TABLE rota_nodes ADD COLUMN session_key {int}"
        ));
        out.push(format!("ALTER TABLE rota_nodes ADD COLUMN ended_at {int}"));
        let (key, ..) = dialect.types();
        out.push(format!("ALTER TABLE rota_nodes ADD COLUMN guard {key}"));
        out.push("UPDATE rota_meta SET value = 8 WHERE name = 'schema_version'".to_string());
    }
    out
}

/// The DBA script: the same statements, `;`-terminated, with a header.
pub fn script(dialect: Dialect) -> String {
    let mut out = format!(
        "-- rota schema version {VERSION} for {}.\n-- Generated by `rota schema --db {}`; \
         the same statements rota runs when `[store] migrate = true`.\n\n",
        dialect.name(),
        dialect.name()
    );
    for stmt in create_statements(dialect) {
        out.push_str(&stmt);
        out.push_str(";\n\n");
    }
    out
}
