//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry upgrades the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: images, layers, runtimes, build cache, settings.
    "
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE layers (
        digest     TEXT PRIMARY KEY,
        size_bytes INTEGER NOT NULL,
        entries    INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE images (
        name       TEXT PRIMARY KEY,
        source     TEXT NOT NULL,
        config     TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE image_layers (
        image    TEXT NOT NULL REFERENCES images(name),
        position INTEGER NOT NULL,
        layer    TEXT NOT NULL REFERENCES layers(digest),
        PRIMARY KEY (image, position)
    );
    CREATE INDEX image_layers_layer ON image_layers(layer);
    CREATE TABLE runtimes (
        name              TEXT NOT NULL,
        version           INTEGER NOT NULL,
        base              TEXT NOT NULL,
        base_image        TEXT REFERENCES images(name),
        config            TEXT NOT NULL,
        resources         TEXT NOT NULL,
        dockerfile        TEXT NOT NULL,
        dockerfile_digest TEXT NOT NULL,
        created_at        TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE runtime_versions_used (
        name    TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE runtime_layers (
        runtime  TEXT NOT NULL,
        version  INTEGER NOT NULL,
        position INTEGER NOT NULL,
        layer    TEXT NOT NULL REFERENCES layers(digest),
        PRIMARY KEY (runtime, version, position),
        FOREIGN KEY (runtime, version) REFERENCES runtimes(name, version)
    );
    CREATE INDEX runtime_layers_layer ON runtime_layers(layer);
    CREATE TABLE build_cache (
        key          TEXT PRIMARY KEY,
        parent_layer TEXT REFERENCES layers(digest),
        layer        TEXT REFERENCES layers(digest),
        created_at   TEXT NOT NULL
    );
    CREATE INDEX build_cache_layer ON build_cache(layer);
    CREATE INDEX build_cache_parent ON build_cache(parent_layer);
    ",
    // 2: functions, their revisions, code packages, volumes.
    "
    CREATE TABLE code (
        digest     TEXT PRIMARY KEY,
        size_bytes INTEGER NOT NULL,
        entries    INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE functions (
        name       TEXT PRIMARY KEY,
        revision   INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE revisions (
        function   TEXT NOT NULL REFERENCES functions(name),
        revision   INTEGER NOT NULL,
        config     TEXT NOT NULL,
        code       TEXT NOT NULL REFERENCES code(digest),
        created_at TEXT NOT NULL,
        PRIMARY KEY (function, revision)
    );
    CREATE INDEX revisions_code ON revisions(code);
    CREATE TABLE volumes (
        name       TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
    );
    ",
    // 3: environment packages, their builds per base, and package runtimes.
    "
    CREATE TABLE packages (
        name          TEXT NOT NULL,
        version       TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        base          TEXT NOT NULL,
        recipe        TEXT NOT NULL,
        recipe_digest TEXT NOT NULL,
        context       TEXT,
        requires      TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE package_builds (
        package    TEXT NOT NULL,
        version    TEXT NOT NULL,
        base       TEXT NOT NULL,
        base_chain TEXT NOT NULL,
        layer      TEXT REFERENCES layers(digest),
        env        TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (package, version, base_chain),
        FOREIGN KEY (package, version) REFERENCES packages(name, version)
    );
    CREATE INDEX package_builds_layer ON package_builds(layer);
    ALTER TABLE runtimes ADD COLUMN kind TEXT NOT NULL DEFAULT 'dockerfile';
    ALTER TABLE runtimes ADD COLUMN packages TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE runtimes ADD COLUMN parent INTEGER;
    ",
    // 4: where a revision's code was fetched from (JSON: url, ref, commit, subdir), if git.
    "
    ALTER TABLE revisions ADD COLUMN git TEXT;
    ",
];

/// The schema version this build of Strata writes.
pub const CURRENT: u32 = MIGRATIONS.len() as u32;

/// Applies every migration newer than the database's `user_version`, each in its own
/// transaction. A database newer than this build is refused.
pub fn apply(conn: &mut Connection) -> rusqlite::Result<()> {
    let have: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if have > CURRENT {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {have} is newer than this strata ({CURRENT}); upgrade strata"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(have as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)?;
        tx.commit()?;
    }
    Ok(())
}
