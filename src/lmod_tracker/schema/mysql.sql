-- lmod-tracker schema for MariaDB >= 10.5 / MySQL >= 8.0 (InnoDB, utf8mb4).
-- Applied by `lmod-tracker db init`; every statement is idempotent.
--
-- Names follow the lmod_tracking project (user, package, module_usage and the views overview,
-- package_count, package_version_count) so existing queries keep working.
-- Names are compared byte for byte (utf8mb4_bin): `GCC` and `gcc` are different packages.
-- Times are UTC, with microseconds.
--
-- There are no declared FOREIGN KEYs: ids are only ever created, never deleted, and the writer
-- inserts dimension rows in the same transaction as the facts that use them, so references are
-- always valid; declared keys would cost about a third of the insert rate (see README, Schema).

-- Created first: a database with our tables but without this one belongs to another
-- program, while one where `db init` was interrupted has this table (maybe empty) and
-- is completed by the next run.
CREATE TABLE IF NOT EXISTS lmod_tracker_schema (
    version    INT NOT NULL PRIMARY KEY,
    applied_at DATETIME(6) NOT NULL
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `user` (
    id      BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name    VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    UNIQUE KEY uq_user_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS package (
    id      BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    version VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
    UNIQUE KEY uq_package_name_version (name, version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS host (
    id      BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    UNIQUE KEY uq_host_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The modulefile Lmod loaded (path=), e.g. /opt/modulefiles/gcc/12.2.0.lua.
CREATE TABLE IF NOT EXISTS modulefile (
    id      BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    path    VARCHAR(768) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    UNIQUE KEY uq_modulefile_path (path)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A cluster (Lmod's syshost): from the line's cluster=/syshost=, the daemon's `cluster` setting
-- or its `cluster_from_host` rule.
CREATE TABLE IF NOT EXISTS cluster (
    id      BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name    VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    UNIQUE KEY uq_cluster_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per module load. The natural key is (load_time, host, user, package, jobid,
-- modulefile): re-reading the same lines, from any copy of the file, adds nothing, and two jobs
-- of one user that load a module on one node in the same microsecond (or second, for hooks that
-- log whole seconds) are two loads. jobid_key and modulefile_key only put NULLs into that key
-- (a unique key never treats two NULLs as equal): computed, invisible to SELECT *
-- cluster_id: NULL when unknown. userload: 1 the user asked for the module, 0 it was loaded as a
-- dependency, NULL when the line does not say.
CREATE TABLE IF NOT EXISTS module_usage (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id       BIGINT UNSIGNED NOT NULL,
    package_id    BIGINT UNSIGNED NOT NULL,
    host_id       BIGINT UNSIGNED NOT NULL,
    modulefile_id BIGINT UNSIGNED NULL,
    jobid         VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    load_time     DATETIME(6) NOT NULL,
    cluster_id    BIGINT UNSIGNED NULL,
    userload      TINYINT NULL,
    jobid_key     VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                  AS (IFNULL(jobid, '')) VIRTUAL INVISIBLE,
    modulefile_key BIGINT UNSIGNED AS (IFNULL(modulefile_id, 0)) VIRTUAL INVISIBLE,
    UNIQUE KEY uq_module_usage_natural (load_time, host_id, user_id, package_id, jobid_key,
                                        modulefile_key),
    KEY ix_module_usage_package_time (package_id, load_time),
    KEY ix_module_usage_user_time (user_id, load_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per (UTC day, cluster, package, user): written in the same transaction as the
-- module_usage rows it counts (only rows actually inserted), so the two always agree until
-- `db prune` deletes old module_usage rows (this table is kept). cluster_id 0 = unknown.
-- user_loads counts the loads with userload = 1.
CREATE TABLE IF NOT EXISTS usage_daily (
    day         DATE NOT NULL,
    cluster_id  BIGINT UNSIGNED NOT NULL DEFAULT 0,
    package_id  BIGINT UNSIGNED NOT NULL,
    user_id     BIGINT UNSIGNED NOT NULL,
    loads       BIGINT UNSIGNED NOT NULL,
    user_loads  BIGINT UNSIGNED NOT NULL,
    first_load  DATETIME(6) NOT NULL,
    last_load   DATETIME(6) NOT NULL,
    PRIMARY KEY (day, cluster_id, package_id, user_id),
    KEY ix_usage_daily_package_day (package_id, day),
    KEY ix_usage_daily_user_day (user_id, day)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- usage_daily summed per UTC month (month = its first day), for reports over long windows:
-- a year is 12 of these rows per (cluster, module version, user) instead of one per day used.
-- Built from usage_daily for months that have ended, outside the writer's transaction (the
-- daemon, hourly, or `lmod-tracker db months`). A month is read from here only while
-- usage_month has its row: the writer deletes that row in the transaction of any rollup change
-- to the month (a late line, a backfill), and reports read that month from usage_daily until
-- it is built again.
CREATE TABLE IF NOT EXISTS usage_monthly (
    month       DATE NOT NULL,
    cluster_id  BIGINT UNSIGNED NOT NULL DEFAULT 0,
    package_id  BIGINT UNSIGNED NOT NULL,
    user_id     BIGINT UNSIGNED NOT NULL,
    loads       BIGINT UNSIGNED NOT NULL,
    user_loads  BIGINT UNSIGNED NOT NULL,
    first_load  DATETIME(6) NOT NULL,
    last_load   DATETIME(6) NOT NULL,
    PRIMARY KEY (month, cluster_id, package_id, user_id),
    KEY ix_usage_monthly_package_month (package_id, month),
    KEY ix_usage_monthly_user_month (user_id, month)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- usage_monthly summed per (month, cluster, package): loads per module version over months
-- without reading every user's row (what `report top` ranks by). Built with usage_monthly.
CREATE TABLE IF NOT EXISTS package_monthly (
    month       DATE NOT NULL,
    cluster_id  BIGINT UNSIGNED NOT NULL DEFAULT 0,
    package_id  BIGINT UNSIGNED NOT NULL,
    loads       BIGINT UNSIGNED NOT NULL,
    user_loads  BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (month, cluster_id, package_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The months of usage_monthly and package_monthly that agree with usage_daily (see above).
CREATE TABLE IF NOT EXISTS usage_month (
    month       DATE NOT NULL PRIMARY KEY,
    built_at    DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Lines that carry the tracking tag but could not be parsed, kept raw for inspection.
CREATE TABLE IF NOT EXISTS rejected_line (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    instance    VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    path        VARCHAR(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    fingerprint CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    byte_offset BIGINT UNSIGNED NOT NULL,
    reason      VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    raw         VARBINARY(4096) NOT NULL,
    seen_at     DATETIME(6) NOT NULL,
    UNIQUE KEY uq_rejected_line_position (fingerprint, byte_offset)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- How far each daemon (instance) has read each file content. Written in the same transaction
-- as the rows read from it, so the database alone says where to resume. `tail` is a hash of
-- the 64 bytes before byte_offset: a resume uses the offset only where the file holds them.
CREATE TABLE IF NOT EXISTS file_checkpoint (
    instance    VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    dev         BIGINT UNSIGNED NOT NULL,
    ino         BIGINT UNSIGNED NOT NULL,
    fingerprint CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    path        VARCHAR(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    byte_offset BIGINT UNSIGNED NOT NULL,
    tail        CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
    updated_at  DATETIME(6) NOT NULL,
    PRIMARY KEY (instance, dev, ino, fingerprint),
    KEY ix_file_checkpoint_fingerprint (instance, fingerprint)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE OR REPLACE VIEW overview AS
    SELECT `user`.name AS user, package.name AS package, package.version, module_usage.load_time
    FROM module_usage
    JOIN `user` ON `user`.id = module_usage.user_id
    JOIN package ON package.id = module_usage.package_id;

CREATE OR REPLACE VIEW package_count AS
    SELECT package.name AS package, COUNT(*) AS count, MAX(module_usage.load_time) AS last_load
    FROM module_usage
    JOIN package ON package.id = module_usage.package_id
    GROUP BY package.name;

CREATE OR REPLACE VIEW package_version_count AS
    SELECT package.name AS package, package.version AS version, COUNT(*) AS count,
           MAX(module_usage.load_time) AS last_load
    FROM module_usage
    JOIN package ON package.id = module_usage.package_id
    GROUP BY package.name, package.version;

INSERT INTO lmod_tracker_schema (version, applied_at)
    SELECT 4, UTC_TIMESTAMP(6) FROM DUAL
    WHERE NOT EXISTS (SELECT 1 FROM lmod_tracker_schema);
