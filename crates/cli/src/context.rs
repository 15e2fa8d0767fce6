//! Packing a build context directory into a tar, honouring `.dockerignore`.

use std::fs::File;
use std::path::Path;

use anyhow::Context;

/// Lines of a `.dockerignore`: glob patterns relative to the context root; `!` re-includes.
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<(bool, glob::Pattern)>,
}

impl Ignore {
    pub fn load(dir: &Path) -> anyhow::Result<Ignore> {
        let path = dir.join(".dockerignore");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(Ignore::default());
        };
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pat = pat
                .trim_start_matches("./")
                .trim_start_matches('/')
                .trim_end_matches('/');
            let p = glob::Pattern::new(pat).with_context(|| {
                format!("{}:{}: invalid pattern {pat:?}", path.display(), n + 1)
            })?;
            rules.push((negate, p));
        }
        Ok(Ignore { rules })
    }

    /// Whether a relative path (or one of its parents) is ignored.
    pub fn ignored(&self, rel: &str) -> bool {
        let mut ignored = false;
        for (negate, p) in &self.rules {
            let opts = glob::MatchOptions {
                require_literal_separator: true,
                ..Default::default()
            };
            let hit = p.matches_with(rel, opts)
                || rel
                    .match_indices('/')
                    .any(|(i, _)| p.matches_with(&rel[..i], opts));
            if hit {
                ignored = !negate;
            }
        }
        ignored
    }
}

/// Writes the context directory as a tar into `out`; returns the number of entries.
pub fn pack(dir: &Path, out: &File) -> anyhow::Result<u64> {
    let ignore = Ignore::load(dir)?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut n = 0;
    for entry in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("reading build context {}", dir.display()))?;
        let rel = entry
            .path()
            .strip_prefix(dir)
            .context("walking the context")?;
        let rel_s = rel.to_string_lossy();
        if ignore.ignored(&rel_s) {
            continue;
        }
        builder
            .append_path_with_name(entry.path(), rel)
            .with_context(|| format!("adding {} to the build context", entry.path().display()))?;
        n += 1;
    }
    builder
        .finish()
        .context("finishing the build context archive")?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(".dockerignore"),
            "# c\n*.log\nbuild/\n!keep.log\n",
        )
        .expect("write");
        let ig = Ignore::load(dir.path()).expect("load");
        assert!(ig.ignored("a.log"));
        assert!(!ig.ignored("keep.log"));
        assert!(ig.ignored("build"));
        assert!(ig.ignored("build/x/y"));
        assert!(!ig.ignored("src/a.py"));
        assert!(
            !ig.ignored("src/a.log"),
            "*.log matches only at the top, as in Docker"
        );
    }

    #[test]
    fn packs_without_ignored_files_and_keeps_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(".dockerignore"), "secret.txt\n").expect("write");
        std::fs::write(dir.path().join("app.py"), "print(1)").expect("write");
        std::fs::write(dir.path().join("secret.txt"), "x").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).expect("symlink");
        let out = tempfile::tempfile().expect("tempfile");
        pack(dir.path(), &out).expect("pack");
        let mut f = out;
        use std::io::Seek;
        f.rewind().expect("rewind");
        let mut ar = tar::Archive::new(f);
        let mut names = vec![];
        for e in ar.entries().expect("entries") {
            let e = e.expect("entry");
            names.push((
                e.path().expect("path").to_string_lossy().into_owned(),
                e.header().entry_type().is_symlink(),
            ));
        }
        names.sort();
        assert_eq!(
            names,
            vec![
                (".dockerignore".into(), false),
                ("app.py".into(), false),
                ("link".into(), true)
            ]
        );
    }
}
