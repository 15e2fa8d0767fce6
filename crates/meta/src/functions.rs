//! Functions, their immutable revisions, code packages and volumes.

use rusqlite::{params, OptionalExtension};
use strata_types::api::FunctionConfig;
use strata_types::Digest;

use crate::{from_json, now_rfc3339, parse_digest, to_json, Meta, MetaError, Result};

/// A stored code package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    /// Tree digest of the unpacked code.
    pub digest: Digest,
    /// Bytes of file content.
    pub size_bytes: u64,
    /// Entries.
    pub entries: u64,
}

/// A function at its current revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRecord {
    /// Name.
    pub name: String,
    /// Current revision.
    pub revision: u32,
    /// Configuration of the current revision.
    pub config: FunctionConfig,
    /// Code of the current revision.
    pub code: CodeRecord,
    /// When the function was created.
    pub created_at: String,
    /// When the current revision was made.
    pub updated_at: String,
}

impl Meta {
    /// Records a code package (no-op when known).
    pub fn put_code(&self, code: &CodeRecord) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO code(digest, size_bytes, entries, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![code.digest.to_string(), code.size_bytes as i64, code.entries as i64, now_rfc3339()],
        )?;
        Ok(())
    }

    /// Code packages no revision uses.
    pub fn unused_code(&self) -> Result<Vec<Digest>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT digest FROM code WHERE digest NOT IN (SELECT code FROM revisions) ORDER BY digest")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| parse_digest(&r?)).collect()
    }

    /// Every recorded code digest.
    pub fn code_digests(&self) -> Result<Vec<Digest>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT digest FROM code ORDER BY digest")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| parse_digest(&r?)).collect()
    }

    /// Forgets a code package unless a revision uses it; returns whether it was forgotten.
    pub fn delete_code(&self, digest: &Digest) -> Result<bool> {
        let n = self.conn().execute(
            "DELETE FROM code WHERE digest = ?1 AND digest NOT IN (SELECT code FROM revisions)",
            [digest.to_string()],
        )?;
        Ok(n > 0)
    }

    /// Creates a function at revision 1. Its code must be recorded first.
    pub fn insert_function(
        &self,
        name: &str,
        config: &FunctionConfig,
        code: &Digest,
    ) -> Result<u32> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM functions WHERE name = ?1",
                [name],
                |_| Ok(()),
            )
            .optional()?;
        if exists.is_some() {
            return Err(MetaError::AlreadyExists {
                what: "function",
                name: name.into(),
            });
        }
        let now = now_rfc3339();
        tx.execute(
            "INSERT INTO functions(name, revision, created_at) VALUES (?1, 1, ?2)",
            params![name, now],
        )?;
        tx.execute(
            "INSERT INTO revisions(function, revision, config, code, created_at) VALUES (?1, 1, ?2, ?3, ?4)",
            params![name, to_json(config), code.to_string(), now],
        )?;
        tx.commit()?;
        Ok(1)
    }

    /// Adds the next revision of a function and makes it current; `None` when there is no such
    /// function.
    pub fn add_revision(
        &self,
        name: &str,
        config: &FunctionConfig,
        code: &Digest,
    ) -> Result<Option<u32>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let current: Option<u32> = tx
            .query_row(
                "SELECT revision FROM functions WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        let Some(current) = current else {
            return Ok(None);
        };
        let next = current + 1;
        tx.execute(
            "INSERT INTO revisions(function, revision, config, code, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, next, to_json(config), code.to_string(), now_rfc3339()],
        )?;
        tx.execute(
            "UPDATE functions SET revision = ?2 WHERE name = ?1",
            params![name, next],
        )?;
        tx.commit()?;
        Ok(Some(next))
    }

    /// Records where a revision's code was fetched from (a JSON document), or clears it.
    pub fn set_revision_git(&self, name: &str, revision: u32, git: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE revisions SET git = ?3 WHERE function = ?1 AND revision = ?2",
            params![name, revision, git],
        )?;
        Ok(())
    }

    /// Where a revision's code was fetched from, as recorded by [`Meta::set_revision_git`].
    pub fn revision_git(&self, name: &str, revision: u32) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT git FROM revisions WHERE function = ?1 AND revision = ?2",
                params![name, revision],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// A function at its current revision.
    pub fn function(&self, name: &str) -> Result<Option<FunctionRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT f.name, f.revision, f.created_at, r.config, r.created_at, c.digest, c.size_bytes, c.entries
                 FROM functions f
                 JOIN revisions r ON r.function = f.name AND r.revision = f.revision
                 JOIN code c ON c.digest = r.code
                 WHERE f.name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, i64>(7)?,
                    ))
                },
            )
            .optional()?;
        let Some((name, revision, created_at, config, updated_at, digest, size, entries)) = row
        else {
            return Ok(None);
        };
        Ok(Some(FunctionRecord {
            name,
            revision,
            config: from_json(&config, "function config")?,
            code: CodeRecord {
                digest: parse_digest(&digest)?,
                size_bytes: size as u64,
                entries: entries as u64,
            },
            created_at,
            updated_at,
        }))
    }

    /// Every function, by name.
    pub fn functions(&self) -> Result<Vec<FunctionRecord>> {
        let names: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT name FROM functions ORDER BY name")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        names
            .iter()
            .filter_map(|n| self.function(n).transpose())
            .collect()
    }

    /// Deletes a function and its revisions; returns whether it existed.
    pub fn delete_function(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM revisions WHERE function = ?1", [name])?;
        let n = tx.execute("DELETE FROM functions WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Functions whose current revision uses a runtime name (any version when `version` is
    /// `None`, else that version or the bare name when it is the newest).
    pub fn runtime_users(
        &self,
        name: &str,
        version: Option<u32>,
        newest: Option<u32>,
    ) -> Result<Vec<String>> {
        Ok(self
            .functions()?
            .into_iter()
            .filter(|f| {
                let (rt, ver) = match f.config.runtime.split_once('@') {
                    Some((n, v)) => (n, v.parse::<u32>().ok()),
                    None => (f.config.runtime.as_str(), None),
                };
                rt == name
                    && match (version, ver) {
                        (None, _) => true,
                        (Some(v), Some(fv)) => v == fv,
                        (Some(v), None) => Some(v) == newest,
                    }
            })
            .map(|f| f.name)
            .collect())
    }

    // ---- volumes ----

    /// Creates a volume record.
    pub fn insert_volume(&self, name: &str) -> Result<()> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO volumes(name, created_at) VALUES (?1, ?2)",
            params![name, now_rfc3339()],
        )?;
        if n == 0 {
            return Err(MetaError::AlreadyExists {
                what: "volume",
                name: name.into(),
            });
        }
        Ok(())
    }

    /// Every volume: name and creation time.
    pub fn volumes(&self) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, created_at FROM volumes ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Whether a volume exists.
    pub fn has_volume(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM volumes WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Functions whose current revision mounts a volume.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .functions()?
            .into_iter()
            .filter(|f| f.config.volumes.iter().any(|v| v.volume == name))
            .map(|f| f.name)
            .collect())
    }

    /// Deletes a volume record; refuses while a function mounts it. Returns whether it existed.
    pub fn delete_volume(&self, name: &str) -> Result<bool> {
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            return Err(MetaError::InUse {
                what: "volume",
                name: name.into(),
                users: users.join(", "),
            });
        }
        Ok(self
            .conn()
            .execute("DELETE FROM volumes WHERE name = ?1", [name])?
            > 0)
    }
}
