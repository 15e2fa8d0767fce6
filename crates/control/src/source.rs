//! Simple-mode code: a function whose code is a few small text files can be read and written as
//! text (the console's editor). Writing packs the files into a tar and deploys it through the
//! normal code import, so an edit is an ordinary new revision with the same safety checks.

use std::path::{Component, Path};
use std::sync::Arc;

use strata_types::api::{FunctionConfig, FunctionInfo, FunctionUpdate};

use crate::{ControlError, Platform};

/// Most files simple-mode code may have.
pub const SIMPLE_MAX_FILES: usize = 32;
/// Most bytes (all files together) simple-mode code may have.
pub const SIMPLE_MAX_BYTES: u64 = 512 << 10;

/// One text file of simple-mode code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the code root, `/`-separated (e.g. `app.py`, `lib/util.py`).
    pub path: String,
    /// The file's text.
    pub text: String,
    /// Whether the file is executable.
    pub executable: bool,
}

impl Platform {
    /// A function's code as text files, when it is simple: at most [`SIMPLE_MAX_FILES`] regular
    /// UTF-8 files of at most [`SIMPLE_MAX_BYTES`] in all, and no symbolic links. `None` when the
    /// code is not simple (edit it by uploading an archive instead).
    pub fn function_source(&self, name: &str) -> Result<Option<Vec<SourceFile>>, ControlError> {
        let f = self.function_record(name)?;
        let root = self.store.code_path(&f.code.digest);
        let mut files = Vec::new();
        let mut total = 0u64;
        if !walk(&root, &root, &mut files, &mut total)? {
            return Ok(None);
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Some(files))
    }

    /// Creates a function whose code is the given text files.
    pub async fn create_function_from_source(
        self: &Arc<Self>,
        name: &str,
        config: FunctionConfig,
        files: &[SourceFile],
    ) -> Result<FunctionInfo, ControlError> {
        let scratch = self.store.scratch_dir("source")?;
        let tar = scratch.path().join("code.tar");
        pack_source(files, &tar)?;
        self.create_function(name, config, &tar).await
    }

    /// Deploys the given text files (and a configuration change, if any) as the function's next
    /// revision.
    pub async fn update_function_source(
        self: &Arc<Self>,
        name: &str,
        update: FunctionUpdate,
        files: &[SourceFile],
    ) -> Result<FunctionInfo, ControlError> {
        self.function_record(name)?;
        let scratch = self.store.scratch_dir("source")?;
        let tar = scratch.path().join("code.tar");
        pack_source(files, &tar)?;
        self.update_function(name, update, Some(&tar)).await
    }
}

/// Collects the files under `dir`; false as soon as the tree is not simple.
fn walk(
    root: &Path,
    dir: &Path,
    files: &mut Vec<SourceFile>,
    total: &mut u64,
) -> Result<bool, ControlError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ControlError::io(format!("read code directory {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ControlError::io("read code directory", e))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| ControlError::io(format!("stat {}", path.display()), e))?;
        if meta.is_dir() {
            if !walk(root, &path, files, total)? {
                return Ok(false);
            }
            continue;
        }
        if !meta.is_file() || files.len() >= SIMPLE_MAX_FILES {
            return Ok(false);
        }
        *total += meta.len();
        if *total > SIMPLE_MAX_BYTES {
            return Ok(false);
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| ControlError::io(format!("read {}", path.display()), e))?;
        let Ok(text) = String::from_utf8(bytes) else {
            return Ok(false);
        };
        let rel = path
            .strip_prefix(root)
            .map_err(|_| ControlError::Internal("code file outside its root".into()))?;
        let Some(rel) = rel.to_str() else {
            return Ok(false);
        };
        use std::os::unix::fs::PermissionsExt;
        files.push(SourceFile {
            path: rel.to_string(),
            text,
            executable: meta.permissions().mode() & 0o111 != 0,
        });
    }
    Ok(true)
}

/// Checks a file list: at least one file, relative unique paths without `.`/`..`, within the
/// simple-mode caps.
pub fn check_source(files: &[SourceFile]) -> Result<(), ControlError> {
    if files.is_empty() {
        return Err(ControlError::Invalid(
            "the code needs at least one file".into(),
        ));
    }
    if files.len() > SIMPLE_MAX_FILES {
        return Err(ControlError::Invalid(format!(
            "the editor takes at most {SIMPLE_MAX_FILES} files; upload an archive instead"
        )));
    }
    let total: u64 = files.iter().map(|f| f.text.len() as u64).sum();
    if total > SIMPLE_MAX_BYTES {
        return Err(ControlError::Invalid(format!(
            "the editor takes at most {SIMPLE_MAX_BYTES} bytes of code; upload an archive instead"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for f in files {
        let p = Path::new(&f.path);
        let ok = !f.path.is_empty()
            && f.path.len() <= 255
            && !f.path.contains('\0')
            && !f.path.contains('\\')
            && !f.path.ends_with('/')
            && p.components().all(|c| matches!(c, Component::Normal(_)));
        if !ok {
            return Err(ControlError::Invalid(format!(
                "invalid file name {:?}: use a relative path such as app.py or lib/util.py",
                f.path
            )));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(ControlError::Invalid(format!(
                "file {:?} is listed twice",
                f.path
            )));
        }
    }
    Ok(())
}

/// Writes the files as a tar archive at `dest` (after [`check_source`]).
pub fn pack_source(files: &[SourceFile], dest: &Path) -> Result<(), ControlError> {
    check_source(files)?;
    let out =
        std::fs::File::create(dest).map_err(|e| ControlError::io("create code archive", e))?;
    let mut b = tar::Builder::new(out);
    for f in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(f.text.len() as u64);
        h.set_mode(if f.executable { 0o755 } else { 0o644 });
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mtime(0);
        b.append_data(&mut h, &f.path, f.text.as_bytes())
            .map_err(|e| ControlError::io(format!("pack {}", f.path), e))?;
    }
    b.into_inner()
        .and_then(|f| f.sync_all())
        .map_err(|e| ControlError::io("finish code archive", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: text.into(),
            executable: false,
        }
    }

    #[test]
    fn checks_paths_and_caps() {
        assert!(check_source(&[file("app.py", "x"), file("lib/u.py", "y")]).is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "./a",
            "a/",
            "a\\b",
            "a\0b",
        ] {
            let e = check_source(&[file(bad, "x")]).expect_err(bad);
            assert_eq!(e.kind(), strata_types::ErrorKind::InvalidArgument, "{bad}");
        }
        assert!(check_source(&[]).is_err());
        assert!(check_source(&[file("a", "1"), file("a", "2")]).is_err());
        let big = "x".repeat(SIMPLE_MAX_BYTES as usize + 1);
        assert!(check_source(&[file("a", &big)]).is_err());
        let many: Vec<_> = (0..=SIMPLE_MAX_FILES)
            .map(|i| file(&format!("f{i}"), ""))
            .collect();
        assert!(check_source(&many).is_err());
    }

    #[test]
    fn packs_a_tar_that_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("c.tar");
        let mut run = file("bin/run", "#!/bin/sh\n");
        run.executable = true;
        pack_source(&[file("app.py", "print('hi')\n"), run], &dest).expect("pack");
        let mut ar = tar::Archive::new(std::fs::File::open(&dest).expect("open"));
        let mut seen = Vec::new();
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).expect("read");
            seen.push((
                e.path().expect("path").display().to_string(),
                e.header().mode().expect("mode"),
                text,
            ));
        }
        assert_eq!(
            seen,
            [
                ("app.py".to_string(), 0o644, "print('hi')\n".to_string()),
                ("bin/run".to_string(), 0o755, "#!/bin/sh\n".to_string()),
            ]
        );
    }
}
