//! Strata's metadata store: images, layers, runtime versions and the build cache, in SQLite.
//!
//! The store owns the schema and its migrations, opens the database in WAL mode with
//! `synchronous=FULL` (an acknowledged write survives a power loss) and foreign keys on, and
//! exposes domain operations — never SQL — so that another backend (PostgreSQL for many nodes) can
//! stand behind the same methods later. It must not touch files other than its database, and it
//! never checks that a blob or layer exists on disk: callers commit content to the store first and
//! record it here second, so a row never points at missing content.

mod functions;
mod migrations;
mod packages;
mod time;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use strata_types::{Digest, ErrorKind, ImageConfig, Resources};

pub use functions::{CodeRecord, FunctionRecord};
pub use packages::{NewPackage, PackageBuildRecord, PackageRecord};
pub use time::now_rfc3339;

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Opening or migrating the database failed.
    #[error("cannot open metadata database {path}: {source}")]
    Open {
        /// Database file.
        path: String,
        /// Cause.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("metadata query failed: {0}")]
    Query(#[from] rusqlite::Error),
    /// A stored JSON column does not parse (a bug or a hand-edited database).
    #[error("stored {what} is corrupt: {source}")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// Cause.
        source: serde_json::Error,
    },
    /// A stored digest does not parse.
    #[error("stored digest is corrupt: {0}")]
    CorruptDigest(String),
    /// The thing already exists.
    #[error("{what} {name:?} already exists")]
    AlreadyExists {
        /// `image`, `runtime`...
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The thing is still used by others.
    #[error("{what} {name:?} is in use by {users}")]
    InUse {
        /// `image`, `runtime`...
        what: &'static str,
        /// Its name.
        name: String,
        /// Who uses it, comma-separated.
        users: String,
    },
}

impl MetaError {
    /// The error's kind, for mapping to API statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MetaError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            MetaError::InUse { .. } => ErrorKind::FailedPrecondition,
            MetaError::Open { .. }
            | MetaError::Query(_)
            | MetaError::Corrupt { .. }
            | MetaError::CorruptDigest(_) => ErrorKind::Internal,
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, MetaError>;

/// A stored layer's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    /// Tree digest (the layer's identity).
    pub digest: Digest,
    /// Bytes of file content.
    pub size_bytes: u64,
    /// Number of entries.
    pub entries: u64,
    /// What made it.
    pub created_by: String,
}

/// A base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Name.
    pub name: String,
    /// How it was made.
    pub source: String,
    /// Process configuration.
    pub config: ImageConfig,
    /// Layers, bottom first.
    pub layers: Vec<Digest>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// A runtime version to be recorded; the store assigns the version number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRuntime {
    /// Name.
    pub name: String,
    /// What the final stage started from, as written after expansion.
    pub base: String,
    /// The image at the root of the runtime's layer chain, if any (`FROM scratch` has none).
    pub base_image: Option<String>,
    /// Process configuration.
    pub config: ImageConfig,
    /// Default resources.
    pub resources: Resources,
    /// The Dockerfile text.
    pub dockerfile: String,
    /// Its digest.
    pub dockerfile_digest: Digest,
    /// Layers, bottom first.
    pub layers: Vec<Digest>,
    /// How it was made: `dockerfile`, `layered` or `composed`.
    pub kind: String,
    /// Package runtimes: the packages (`name@version`) in stacking order.
    pub packages: Vec<String>,
    /// The version it was made from by an update or rollback.
    pub parent: Option<u32>,
}

/// A stored runtime version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRecord {
    /// Name.
    pub name: String,
    /// Version, from 1.
    pub version: u32,
    /// What the final stage started from.
    pub base: String,
    /// The image at the root of the chain.
    pub base_image: Option<String>,
    /// Process configuration.
    pub config: ImageConfig,
    /// Default resources.
    pub resources: Resources,
    /// The Dockerfile text.
    pub dockerfile: String,
    /// Its digest.
    pub dockerfile_digest: Digest,
    /// Layers, bottom first.
    pub layers: Vec<Digest>,
    /// How it was made: `dockerfile`, `layered` or `composed`.
    pub kind: String,
    /// Package runtimes: the packages (`name@version`) in stacking order.
    pub packages: Vec<String>,
    /// The version it was made from by an update or rollback.
    pub parent: Option<u32>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

impl RuntimeRecord {
    /// `name@version`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// The metadata store. Cheap to share behind an `Arc`; calls are serialized on one connection.
#[derive(Debug)]
pub struct Meta {
    conn: Mutex<Connection>,
}

impl Meta {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Meta> {
        let open_err = |source| MetaError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        migrations::apply(&mut conn).map_err(open_err)?;
        Ok(Meta {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The schema version after migrations.
    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Runs SQLite's integrity check; `Ok(true)` when the database is sound.
    pub fn integrity_ok(&self) -> Result<bool> {
        let s: String = self
            .conn()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        Ok(s == "ok")
    }

    // ---- settings ----

    /// A stored setting.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Stores a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO settings(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    // ---- layers ----

    /// Records a layer (no-op if already recorded).
    pub fn put_layer(&self, layer: &LayerRecord) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO layers(digest, size_bytes, entries, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![layer.digest.to_string(), layer.size_bytes as i64, layer.entries as i64, layer.created_by, now_rfc3339()],
        )?;
        Ok(())
    }

    /// A recorded layer.
    pub fn layer(&self, digest: &Digest) -> Result<Option<LayerRecord>> {
        self.conn()
            .query_row(
                "SELECT digest, size_bytes, entries, created_by FROM layers WHERE digest = ?1",
                [digest.to_string()],
                layer_row,
            )
            .optional()?
            .transpose()
    }

    /// Every recorded layer digest.
    pub fn layer_digests(&self) -> Result<Vec<Digest>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT digest FROM layers ORDER BY digest")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| parse_digest(&r?)).collect::<Result<Vec<_>>>()
    }

    /// How many images and runtime versions use a layer.
    pub fn layer_users(&self, digest: &Digest) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT (SELECT COUNT(DISTINCT image) FROM image_layers WHERE layer = ?1)
                  + (SELECT COUNT(*) FROM (SELECT DISTINCT runtime, version FROM runtime_layers WHERE layer = ?1))
                  + (SELECT COUNT(*) FROM package_builds WHERE layer = ?1)",
            [digest.to_string()],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Layers no image or runtime version uses (build-cache entries do not keep a layer alive).
    pub fn unused_layers(&self) -> Result<Vec<Digest>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT digest FROM layers
             WHERE digest NOT IN (SELECT layer FROM image_layers)
               AND digest NOT IN (SELECT layer FROM runtime_layers)
               AND digest NOT IN (SELECT layer FROM package_builds WHERE layer IS NOT NULL)
             ORDER BY digest",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| parse_digest(&r?)).collect::<Result<Vec<_>>>()
    }

    /// Forgets a layer and the build-cache entries that lead to it. Refuses (returns `false`) if
    /// an image or runtime still uses it.
    pub fn delete_layer(&self, digest: &Digest) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let d = digest.to_string();
        let used: i64 = tx.query_row(
            "SELECT (SELECT COUNT(*) FROM image_layers WHERE layer = ?1) + (SELECT COUNT(*) FROM runtime_layers WHERE layer = ?1)
                  + (SELECT COUNT(*) FROM package_builds WHERE layer = ?1)",
            [&d],
            |r| r.get(0),
        )?;
        if used > 0 {
            return Ok(false);
        }
        tx.execute(
            "DELETE FROM build_cache WHERE layer = ?1 OR parent_layer = ?1",
            [&d],
        )?;
        tx.execute("DELETE FROM layers WHERE digest = ?1", [&d])?;
        tx.commit()?;
        Ok(true)
    }

    // ---- build cache ----

    /// Looks up a build step: `Some(Some(layer))` when cached with a layer, `Some(None)` when
    /// cached as "made no change", `None` when not cached.
    pub fn cache_get(&self, key: &str) -> Result<Option<Option<Digest>>> {
        let row: Option<Option<String>> = self
            .conn()
            .query_row("SELECT layer FROM build_cache WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        row.map(|layer| layer.map(|d| parse_digest(&d)).transpose())
            .transpose()
    }

    /// Records a build step's result. `parent_layer` is the top layer the step ran on, so that
    /// forgetting that layer forgets the entry too.
    pub fn cache_put(
        &self,
        key: &str,
        parent_layer: Option<&Digest>,
        layer: Option<&Digest>,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT INTO build_cache(key, parent_layer, layer, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(key) DO UPDATE SET layer = excluded.layer, parent_layer = excluded.parent_layer",
            params![key, parent_layer.map(|d| d.to_string()), layer.map(|d| d.to_string()), now_rfc3339()],
        )?;
        Ok(())
    }

    // ---- images ----

    /// Records a new image. Its layers must be recorded first.
    pub fn insert_image(&self, image: &ImageRecord) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM images WHERE name = ?1",
                [&image.name],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if exists {
            return Err(MetaError::AlreadyExists {
                what: "image",
                name: image.name.clone(),
            });
        }
        tx.execute(
            "INSERT INTO images(name, source, config, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                image.name,
                image.source,
                to_json(&image.config),
                image.created_at
            ],
        )?;
        for (i, layer) in image.layers.iter().enumerate() {
            tx.execute(
                "INSERT INTO image_layers(image, position, layer) VALUES (?1, ?2, ?3)",
                params![image.name, i as i64, layer.to_string()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// An image by name.
    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT name, source, config, created_at FROM images WHERE name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((name, source, config, created_at)) = row else {
            return Ok(None);
        };
        let layers = layers_of(
            &conn,
            "SELECT layer FROM image_layers WHERE image = ?1 ORDER BY position",
            params![name],
        )?;
        Ok(Some(ImageRecord {
            config: from_json(&config, "image config")?,
            name,
            source,
            layers,
            created_at,
        }))
    }

    /// All images, by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let names: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT name FROM images ORDER BY name")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        names
            .iter()
            .filter_map(|n| self.image(n).transpose())
            .collect()
    }

    /// Runtime versions whose layer chain starts from the image, as `name@version`.
    pub fn image_users(&self, name: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, version FROM runtimes WHERE base_image = ?1 ORDER BY name, version",
        )?;
        let rows = stmt.query_map([name], |r| {
            Ok(format!(
                "{}@{}",
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?
            ))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Deletes an image; refuses while a runtime version uses it. Returns whether it existed.
    pub fn delete_image(&self, name: &str) -> Result<bool> {
        let users = self.image_users(name)?;
        if !users.is_empty() {
            return Err(MetaError::InUse {
                what: "image",
                name: name.to_string(),
                users: users.join(", "),
            });
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM image_layers WHERE image = ?1", [name])?;
        let n = tx.execute("DELETE FROM images WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(n > 0)
    }

    // ---- runtimes ----

    /// Records the next version of a runtime and returns it. Its layers must be recorded first.
    pub fn insert_runtime(&self, rt: &NewRuntime) -> Result<RuntimeRecord> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let version: u32 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM (SELECT version FROM runtimes WHERE name = ?1
             UNION ALL SELECT version FROM runtime_versions_used WHERE name = ?1)",
            [&rt.name],
            |r| r.get(0),
        )?;
        let created_at = now_rfc3339();
        tx.execute(
            "INSERT INTO runtimes(name, version, base, base_image, config, resources, dockerfile, dockerfile_digest, created_at, kind, packages, parent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                rt.name,
                version,
                rt.base,
                rt.base_image,
                to_json(&rt.config),
                to_json(&rt.resources),
                rt.dockerfile,
                rt.dockerfile_digest.to_string(),
                created_at,
                rt.kind,
                to_json(&rt.packages),
                rt.parent
            ],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO runtime_versions_used(name, version) VALUES (?1, ?2)",
            params![rt.name, version],
        )?;
        insert_runtime_layers(&tx, &rt.name, version, &rt.layers)?;
        tx.commit()?;
        Ok(RuntimeRecord {
            name: rt.name.clone(),
            version,
            base: rt.base.clone(),
            base_image: rt.base_image.clone(),
            config: rt.config.clone(),
            resources: rt.resources.clone(),
            dockerfile: rt.dockerfile.clone(),
            dockerfile_digest: rt.dockerfile_digest.clone(),
            layers: rt.layers.clone(),
            kind: rt.kind.clone(),
            packages: rt.packages.clone(),
            parent: rt.parent,
            created_at,
        })
    }

    /// A runtime version; `None` version means the newest.
    pub fn runtime(&self, name: &str, version: Option<u32>) -> Result<Option<RuntimeRecord>> {
        let conn = self.conn();
        let sql = "SELECT name, version, base, base_image, config, resources, dockerfile, dockerfile_digest, created_at, kind, packages, parent
                   FROM runtimes WHERE name = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY version DESC LIMIT 1";
        let row = conn
            .query_row(sql, params![name, version], runtime_row)
            .optional()?;
        let Some(row) = row else { return Ok(None) };
        let mut rec = row?;
        rec.layers = layers_of(
            &conn,
            "SELECT layer FROM runtime_layers WHERE runtime = ?1 AND version = ?2 ORDER BY position",
            params![rec.name, rec.version],
        )?;
        Ok(Some(rec))
    }

    /// Every runtime version, by name then version.
    pub fn runtimes(&self) -> Result<Vec<RuntimeRecord>> {
        let keys: Vec<(String, u32)> = {
            let conn = self.conn();
            let mut stmt =
                conn.prepare("SELECT name, version FROM runtimes ORDER BY name, version")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        keys.iter()
            .filter_map(|(n, v)| self.runtime(n, Some(*v)).transpose())
            .collect()
    }

    /// Deletes one version, or every version when `version` is `None`. Returns the deleted
    /// references. Version numbers are never reused.
    pub fn delete_runtime(&self, name: &str, version: Option<u32>) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let versions: Vec<u32> = {
            let mut stmt = tx.prepare(
                "SELECT version FROM runtimes WHERE name = ?1 AND (?2 IS NULL OR version = ?2)",
            )?;
            let rows = stmt.query_map(params![name, version], |r| r.get(0))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        for v in &versions {
            tx.execute(
                "DELETE FROM runtime_layers WHERE runtime = ?1 AND version = ?2",
                params![name, v],
            )?;
            tx.execute(
                "DELETE FROM runtimes WHERE name = ?1 AND version = ?2",
                params![name, v],
            )?;
        }
        tx.commit()?;
        Ok(versions.iter().map(|v| format!("{name}@{v}")).collect())
    }
}

fn insert_runtime_layers(
    tx: &Transaction<'_>,
    name: &str,
    version: u32,
    layers: &[Digest],
) -> Result<()> {
    for (i, layer) in layers.iter().enumerate() {
        tx.execute(
            "INSERT INTO runtime_layers(runtime, version, position, layer) VALUES (?1, ?2, ?3, ?4)",
            params![name, version, i as i64, layer.to_string()],
        )?;
    }
    Ok(())
}

type RuntimeRow = Result<RuntimeRecord>;

fn runtime_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RuntimeRow> {
    let config: String = r.get(4)?;
    let resources: String = r.get(5)?;
    let digest: String = r.get(7)?;
    let packages: String = r.get(10)?;
    Ok((|| {
        Ok(RuntimeRecord {
            name: r.get(0)?,
            version: r.get(1)?,
            base: r.get(2)?,
            base_image: r.get(3)?,
            config: from_json(&config, "runtime config")?,
            resources: from_json(&resources, "runtime resources")?,
            dockerfile: r.get(6)?,
            dockerfile_digest: parse_digest(&digest)?,
            layers: Vec::new(),
            kind: r.get(9)?,
            packages: from_json(&packages, "runtime packages")?,
            parent: r.get(11)?,
            created_at: r.get(8)?,
        })
    })())
}

fn layer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<LayerRecord>> {
    let d: String = r.get(0)?;
    Ok(Ok(LayerRecord {
        digest: match parse_digest(&d) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        },
        size_bytes: r.get::<_, i64>(1)? as u64,
        entries: r.get::<_, i64>(2)? as u64,
        created_by: r.get(3)?,
    }))
}

fn layers_of(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Digest>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(p, |r| r.get::<_, String>(0))?;
    rows.map(|r| parse_digest(&r?)).collect()
}

/// Digests are written by this crate only, from `Digest::to_string`; a row that does not parse
/// is a corrupt database.
pub(crate) fn parse_digest(s: &str) -> Result<Digest> {
    s.parse()
        .map_err(|e: strata_types::DigestError| MetaError::CorruptDigest(e.to_string()))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data types always serialize")
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &'static str) -> Result<T> {
    serde_json::from_str(s).map_err(|source| MetaError::Corrupt { what, source })
}

#[cfg(test)]
mod tests;
