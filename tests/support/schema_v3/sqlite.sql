-- lmod-tracker schema for the embedded SQLite store; the same tables and views as schema.sql.
-- Times are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff' (sorts like time).

-- Created first: a database with our tables but without this one belongs to another
-- program, while one where `db init` was interrupted has this table (maybe empty) and
-- is completed by the next run.
CREATE TABLE IF NOT EXISTS lmod_tracker_schema (
    version    INTEGER NOT NULL PRIMARY KEY,
    applied_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS user (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS package (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL,
    version TEXT NOT NULL DEFAULT '',
    UNIQUE (name, version)
);

CREATE TABLE IF NOT EXISTS host (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS modulefile (
    id      INTEGER PRIMARY KEY,
    path    TEXT NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS cluster (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE
);

-- The natural key is (load_time, host, user, package, jobid, modulefile), NULLs equal.
CREATE TABLE IF NOT EXISTS module_usage (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL,
    package_id    INTEGER NOT NULL,
    host_id       INTEGER NOT NULL,
    modulefile_id INTEGER,
    jobid         TEXT,
    load_time     TEXT NOT NULL,
    cluster_id    INTEGER,
    userload      INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS uq_module_usage_natural ON module_usage
    (load_time, host_id, user_id, package_id, IFNULL(jobid, ''), IFNULL(modulefile_id, 0));
CREATE INDEX IF NOT EXISTS ix_module_usage_package_time ON module_usage (package_id, load_time);
CREATE INDEX IF NOT EXISTS ix_module_usage_user_time ON module_usage (user_id, load_time);

-- One row per (UTC day, cluster, package, user), in the same transaction as the facts;
-- cluster_id 0 = unknown. Days 'YYYY-MM-DD', times 'YYYY-MM-DD HH:MM:SS.ffffff'.
CREATE TABLE IF NOT EXISTS usage_daily (
    day         TEXT NOT NULL,
    cluster_id  INTEGER NOT NULL DEFAULT 0,
    package_id  INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    loads       INTEGER NOT NULL,
    user_loads  INTEGER NOT NULL,
    first_load  TEXT NOT NULL,
    last_load   TEXT NOT NULL,
    PRIMARY KEY (day, cluster_id, package_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_usage_daily_package_day ON usage_daily (package_id, day);
CREATE INDEX IF NOT EXISTS ix_usage_daily_user_day ON usage_daily (user_id, day);

CREATE TABLE IF NOT EXISTS rejected_line (
    id          INTEGER PRIMARY KEY,
    instance    TEXT NOT NULL,
    path        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    byte_offset INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    raw         BLOB NOT NULL,
    seen_at     TEXT NOT NULL,
    UNIQUE (fingerprint, byte_offset)
);

CREATE TABLE IF NOT EXISTS file_checkpoint (
    instance    TEXT NOT NULL,
    dev         INTEGER NOT NULL,
    ino         INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    path        TEXT NOT NULL,
    byte_offset INTEGER NOT NULL,
    tail        TEXT NOT NULL DEFAULT '',
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (instance, dev, ino, fingerprint)
);
CREATE INDEX IF NOT EXISTS ix_file_checkpoint_fingerprint ON file_checkpoint (instance, fingerprint);

CREATE VIEW IF NOT EXISTS overview AS
    SELECT user.name AS user, package.name AS package, package.version, module_usage.load_time
    FROM module_usage
    JOIN user ON user.id = module_usage.user_id
    JOIN package ON package.id = module_usage.package_id;

CREATE VIEW IF NOT EXISTS package_count AS
    SELECT package.name AS package, COUNT(*) AS count, MAX(module_usage.load_time) AS last_load
    FROM module_usage
    JOIN package ON package.id = module_usage.package_id
    GROUP BY package.name;

CREATE VIEW IF NOT EXISTS package_version_count AS
    SELECT package.name AS package, package.version AS version, COUNT(*) AS count,
           MAX(module_usage.load_time) AS last_load
    FROM module_usage
    JOIN package ON package.id = module_usage.package_id
    GROUP BY package.name, package.version;

INSERT INTO lmod_tracker_schema (version, applied_at)
    SELECT 3, strftime('%Y-%m-%d %H:%M:%f', 'now')
    WHERE NOT EXISTS (SELECT 1 FROM lmod_tracker_schema);
