//! Environment packages: named, versioned recipes, and their builds (one layer per base).

use rusqlite::{params, OptionalExtension};
use strata_types::Digest;

use crate::{from_json, now_rfc3339, parse_digest, to_json, Meta, MetaError, Result};

/// A package version to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPackage {
    /// Name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// The base named at creation (an image or a runtime reference).
    pub base: String,
    /// The recipe, as one Dockerfile snippet.
    pub recipe: String,
    /// Digest of the recipe and its context.
    pub recipe_digest: Digest,
    /// Blob holding the COPY context (a tar), if the recipe has one.
    pub context: Option<Digest>,
    /// Required packages, `name@version`.
    pub requires: Vec<String>,
}

/// A stored package version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRecord {
    /// Name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// Creation order among the versions of the name, from 1.
    pub seq: u32,
    /// The base named at creation.
    pub base: String,
    /// The recipe, as one Dockerfile snippet.
    pub recipe: String,
    /// Digest of the recipe and its context.
    pub recipe_digest: Digest,
    /// Blob holding the COPY context, if any.
    pub context: Option<Digest>,
    /// Required packages, `name@version`.
    pub requires: Vec<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

impl PackageRecord {
    /// `name@version`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// One build of a package version against one base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageBuildRecord {
    /// Package name.
    pub package: String,
    /// Package version.
    pub version: String,
    /// The base as named when built.
    pub base: String,
    /// Identity of the base's layer stack.
    pub base_chain: String,
    /// The layer; `None` when the recipe changed no file.
    pub layer: Option<Digest>,
    /// `KEY=VALUE` the package adds to a runtime's environment.
    pub env: Vec<String>,
    /// RFC 3339 build time.
    pub created_at: String,
}

const PACKAGE_COLUMNS: &str =
    "name, version, seq, base, recipe, recipe_digest, context, requires, created_at";

impl Meta {
    /// Records a package version. Fails with `AlreadyExists` when that version exists.
    pub fn insert_package(&self, p: &NewPackage) -> Result<PackageRecord> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM packages WHERE name = ?1 AND version = ?2",
                params![p.name, p.version],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_some() {
            return Err(MetaError::AlreadyExists {
                what: "package",
                name: format!("{}@{}", p.name, p.version),
            });
        }
        let seq: u32 = tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM packages WHERE name = ?1",
            [&p.name],
            |r| r.get(0),
        )?;
        let created_at = now_rfc3339();
        tx.execute(
            &format!("INSERT INTO packages({PACKAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
            params![
                p.name,
                p.version,
                seq,
                p.base,
                p.recipe,
                p.recipe_digest.to_string(),
                p.context.as_ref().map(|d| d.to_string()),
                to_json(&p.requires),
                created_at
            ],
        )?;
        tx.commit()?;
        Ok(PackageRecord {
            name: p.name.clone(),
            version: p.version.clone(),
            seq,
            base: p.base.clone(),
            recipe: p.recipe.clone(),
            recipe_digest: p.recipe_digest.clone(),
            context: p.context.clone(),
            requires: p.requires.clone(),
            created_at,
        })
    }

    /// A package version; `None` means the newest (the last created).
    pub fn package(&self, name: &str, version: Option<&str>) -> Result<Option<PackageRecord>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE name = ?1 AND (?2 IS NULL OR version = ?2)
             ORDER BY seq DESC LIMIT 1"
        );
        conn.query_row(&sql, params![name, version], package_row)
            .optional()?
            .transpose()
    }

    /// Every package version, by name then creation order.
    pub fn packages(&self) -> Result<Vec<PackageRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages ORDER BY name, seq"
        ))?;
        let rows = stmt.query_map([], package_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// Records a build (replacing an earlier build against the same base stack).
    pub fn put_package_build(&self, b: &PackageBuildRecord) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO package_builds(package, version, base, base_chain, layer, env, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                b.package,
                b.version,
                b.base,
                b.base_chain,
                b.layer.as_ref().map(|d| d.to_string()),
                to_json(&b.env),
                b.created_at
            ],
        )?;
        Ok(())
    }

    /// The build of a package version against a base stack, if there is one.
    pub fn package_build(
        &self,
        name: &str,
        version: &str,
        base_chain: &str,
    ) -> Result<Option<PackageBuildRecord>> {
        self.conn()
            .query_row(
                "SELECT package, version, base, base_chain, layer, env, created_at FROM package_builds
                 WHERE package = ?1 AND version = ?2 AND base_chain = ?3",
                params![name, version, base_chain],
                build_row,
            )
            .optional()?
            .transpose()
    }

    /// Every build of a package version, oldest first.
    pub fn package_builds(&self, name: &str, version: &str) -> Result<Vec<PackageBuildRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT package, version, base, base_chain, layer, env, created_at FROM package_builds
             WHERE package = ?1 AND version = ?2 ORDER BY created_at, base_chain",
        )?;
        let rows = stmt.query_map(params![name, version], build_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// Runtime versions (`name@version`) whose package list has `package@version`.
    pub fn package_users(&self, name: &str, version: &str) -> Result<Vec<String>> {
        let wanted = format!("{name}@{version}");
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, version, packages FROM runtimes ORDER BY name, version")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (rt, v, packages) = row?;
            let packages: Vec<String> = from_json(&packages, "runtime packages")?;
            if packages.contains(&wanted) {
                out.push(format!("{rt}@{v}"));
            }
        }
        Ok(out)
    }

    /// Package versions that require `package@version`.
    pub fn package_dependents(&self, name: &str, version: &str) -> Result<Vec<String>> {
        let wanted = format!("{name}@{version}");
        Ok(self
            .packages()?
            .into_iter()
            .filter(|p| p.requires.contains(&wanted))
            .map(|p| p.reference())
            .collect())
    }

    /// Forgets one version of a package, or every version, with their builds. Refuses with
    /// `InUse` while a runtime version or another package uses one of them. Returns the
    /// removed references.
    pub fn delete_package(&self, name: &str, version: Option<&str>) -> Result<Vec<String>> {
        let doomed: Vec<PackageRecord> = self
            .packages()?
            .into_iter()
            .filter(|p| p.name == name && version.is_none_or(|v| p.version == v))
            .collect();
        let mut users = Vec::new();
        for p in &doomed {
            users.extend(self.package_users(&p.name, &p.version)?);
            users.extend(
                self.package_dependents(&p.name, &p.version)?
                    .into_iter()
                    .filter(|d| !d.starts_with(&format!("{name}@"))),
            );
        }
        if !users.is_empty() {
            users.sort();
            users.dedup();
            return Err(MetaError::InUse {
                what: "package",
                name: match version {
                    Some(v) => format!("{name}@{v}"),
                    None => name.to_string(),
                },
                users: users.join(", "),
            });
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for p in &doomed {
            tx.execute(
                "DELETE FROM package_builds WHERE package = ?1 AND version = ?2",
                params![p.name, p.version],
            )?;
            tx.execute(
                "DELETE FROM packages WHERE name = ?1 AND version = ?2",
                params![p.name, p.version],
            )?;
        }
        tx.commit()?;
        Ok(doomed.iter().map(PackageRecord::reference).collect())
    }

    /// Blobs that package recipes keep (their COPY contexts).
    pub fn package_context_blobs(&self) -> Result<Vec<Digest>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT DISTINCT context FROM packages WHERE context IS NOT NULL ORDER BY context",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| parse_digest(&r?)).collect()
    }
}

fn package_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<PackageRecord>> {
    let digest: String = r.get(5)?;
    let context: Option<String> = r.get(6)?;
    let requires: String = r.get(7)?;
    Ok((|| {
        Ok(PackageRecord {
            name: r.get(0)?,
            version: r.get(1)?,
            seq: r.get(2)?,
            base: r.get(3)?,
            recipe: r.get(4)?,
            recipe_digest: parse_digest(&digest)?,
            context: context.as_deref().map(parse_digest).transpose()?,
            requires: from_json(&requires, "package requirements")?,
            created_at: r.get(8)?,
        })
    })())
}

fn build_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<PackageBuildRecord>> {
    let layer: Option<String> = r.get(4)?;
    let env: String = r.get(5)?;
    Ok((|| {
        Ok(PackageBuildRecord {
            package: r.get(0)?,
            version: r.get(1)?,
            base: r.get(2)?,
            base_chain: r.get(3)?,
            layer: layer.as_deref().map(parse_digest).transpose()?,
            env: from_json(&env, "package environment")?,
            created_at: r.get(6)?,
        })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LayerRecord, NewRuntime};
    use strata_types::{ImageConfig, Resources};

    fn digest(s: &str) -> Digest {
        let mut b = [0u8; 32];
        for (i, c) in s.bytes().enumerate() {
            b[i % 32] ^= c.wrapping_add(i as u8);
        }
        Digest::from_bytes(&b)
    }

    fn open() -> (tempfile::TempDir, Meta) {
        let dir = tempfile::tempdir().expect("test");
        let meta = Meta::open(&dir.path().join("meta.db")).expect("test");
        (dir, meta)
    }

    fn pkg(name: &str, version: &str, requires: &[&str]) -> NewPackage {
        NewPackage {
            name: name.into(),
            version: version.into(),
            base: "debian".into(),
            recipe: format!("RUN echo {name}"),
            recipe_digest: digest(name),
            context: None,
            requires: requires.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn versions_are_ordered_by_creation_and_immutable() {
        let (_d, meta) = open();
        meta.insert_package(&pkg("curl", "2", &[])).expect("test");
        meta.insert_package(&pkg("curl", "10", &[])).expect("test");
        assert_eq!(
            meta.package("curl", None)
                .expect("test")
                .expect("test")
                .version,
            "10"
        );
        assert_eq!(
            meta.package("curl", Some("2"))
                .expect("test")
                .expect("test")
                .seq,
            1
        );
        assert!(matches!(
            meta.insert_package(&pkg("curl", "2", &[])),
            Err(MetaError::AlreadyExists { .. })
        ));
        assert!(meta.package("git", None).expect("test").is_none());
    }

    #[test]
    fn builds_keep_layers_alive_and_users_block_removal() {
        let (_d, meta) = open();
        let layer = digest("layer");
        meta.put_layer(&LayerRecord {
            digest: layer.clone(),
            size_bytes: 1,
            entries: 1,
            created_by: "package".into(),
        })
        .expect("test");
        meta.insert_package(&pkg("pip", "1", &[])).expect("test");
        meta.insert_package(&pkg("requests", "1", &["pip@1"]))
            .expect("test");
        meta.put_package_build(&PackageBuildRecord {
            package: "pip".into(),
            version: "1".into(),
            base: "debian".into(),
            base_chain: "c1".into(),
            layer: Some(layer.clone()),
            env: vec!["A=1".into()],
            created_at: now_rfc3339(),
        })
        .expect("test");
        assert!(meta.unused_layers().expect("test").is_empty());
        assert_eq!(meta.layer_users(&layer).expect("test"), 1);
        assert!(!meta.delete_layer(&layer).expect("test"));
        let b = meta
            .package_build("pip", "1", "c1")
            .expect("test")
            .expect("test");
        assert_eq!(b.env, vec!["A=1".to_string()]);
        assert!(meta
            .package_build("pip", "1", "c2")
            .expect("test")
            .is_none());

        // Required by another package: refused, naming it.
        let err = meta.delete_package("pip", None).expect_err("test");
        assert!(err.to_string().contains("requests@1"), "{err}");
        // Used by a runtime: refused, naming it.
        meta.insert_runtime(&NewRuntime {
            name: "py".into(),
            base: "debian".into(),
            base_image: None,
            config: ImageConfig::default(),
            resources: Resources::default(),
            dockerfile: String::new(),
            dockerfile_digest: digest("x"),
            layers: vec![],
            kind: "composed".into(),
            packages: vec!["pip@1".into(), "requests@1".into()],
            parent: None,
        })
        .expect("test");
        assert_eq!(
            meta.package_users("requests", "1").expect("test"),
            vec!["py@1"]
        );
        let err = meta
            .delete_package("requests", Some("1"))
            .expect_err("test");
        assert!(err.to_string().contains("py@1"), "{err}");
        meta.delete_runtime("py", None).expect("test");
        assert_eq!(
            meta.delete_package("requests", Some("1")).expect("test"),
            vec!["requests@1"]
        );
        assert_eq!(
            meta.delete_package("pip", None).expect("test"),
            vec!["pip@1"]
        );
        assert!(meta.package_builds("pip", "1").expect("test").is_empty());
        assert_eq!(meta.unused_layers().expect("test"), vec![layer]);
    }
}
