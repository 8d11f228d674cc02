//! Reading a package from the filesystem (feature `fs`): the only part of
//! the crate that does I/O.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;

use crate::{Files, PackageError, archive};

/// Reads a package from a directory or a `.tar.gz`/`.tgz` file.
/// Hidden files and directories (`.git`) are skipped; symlinks are
/// refused.
pub fn load_path(path: &Path) -> Result<Files, PackageError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path)
        .map_err(|e| PackageError::new(&shown, format!("cannot be read: {e}")))?;
    if meta.is_dir() {
        let mut files = Files::new();
        walk(path, "", &mut files)?;
        Ok(files)
    } else {
        let bytes = std::fs::read(path)
            .map_err(|e| PackageError::new(&shown, format!("cannot be read: {e}")))?;
        archive::unpack_tar_gz(&bytes).map_err(|e| PackageError::new(&shown, e.to_string()))
    }
}

fn walk(dir: &Path, prefix: &str, files: &mut Files) -> Result<(), PackageError> {
    let err = |p: &Path, e: std::io::Error| {
        PackageError::new(p.display().to_string(), format!("cannot be read: {e}"))
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| err(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let rel = format!("{prefix}{name}");
        let kind = entry.file_type().map_err(|e| err(&path, e))?;
        if kind.is_dir() {
            walk(&path, &format!("{rel}/"), files)?;
        } else if kind.is_file() {
            if files.len() >= archive::MAX_FILES {
                return Err(PackageError::new(rel, "too many files in the package"));
            }
            files.insert(rel, std::fs::read(&path).map_err(|e| err(&path, e))?);
        } else {
            return Err(PackageError::new(
                rel,
                "only regular files and directories may be in a package (not links)",
            ));
        }
    }
    Ok(())
}
