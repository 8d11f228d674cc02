//! `.tar.gz` archives of packages, packed and unpacked in memory.

use std::io::Read;

use crate::{Files, MANIFEST_FILE, PackageError};

/// Largest unpacked package, bytes: a package is text, artifacts travel
/// separately.
pub const MAX_UNPACKED_BYTES: u64 = 64 << 20;
/// Most files in a package.
pub const MAX_FILES: usize = 10_000;

/// Checks a package-relative path: `/`-separated, no empty, `.` or `..`
/// part, not absolute.
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err("is not a relative path inside the package (no '..', no leading '/')".into());
    }
    Ok(())
}

/// Unpacks a `.tar.gz` of a package. A single top-level directory
/// (`redis/package.toml`) is stripped; regular files only (directories
/// are implied; links and devices are refused).
pub fn unpack_tar_gz(bytes: &[u8]) -> Result<Files, PackageError> {
    let bad = |m: String| PackageError::new("archive", m);
    let gz = flate2::read::GzDecoder::new(bytes);
    let mut archive = tar::Archive::new(gz.take(MAX_UNPACKED_BYTES * 2));
    let mut files = Files::new();
    let mut total = 0u64;
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a .tar.gz: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("not a .tar.gz: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("an entry has a bad path: {e}")))?
            .to_string_lossy()
            .into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir()
            || path.is_empty()
            || kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
        {
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!(
                "{path}: only regular files may be in a package (not links or devices)"
            )));
        }
        check_path(&path).map_err(|m| bad(format!("{path}: {m}")))?;
        total += entry.size();
        if total > MAX_UNPACKED_BYTES || files.len() >= MAX_FILES {
            return Err(bad(format!(
                "larger than a package may be ({MAX_FILES} files, {} MiB): keep big files as artifacts",
                MAX_UNPACKED_BYTES >> 20
            )));
        }
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("{path}: {e}")))?;
        files.insert(path, data);
    }
    Ok(strip_top_dir(files))
}

/// When every file is under one directory and there is no `package.toml`
/// at the top, drops that directory from every path.
pub(crate) fn strip_top_dir(files: Files) -> Files {
    if files.contains_key(MANIFEST_FILE) {
        return files;
    }
    let Some(first) = files
        .keys()
        .next()
        .and_then(|p| p.split_once('/'))
        .map(|(d, _)| format!("{d}/"))
    else {
        return files;
    };
    if !files.keys().all(|p| p.starts_with(&first)) {
        return files;
    }
    files
        .into_iter()
        .map(|(p, d)| (p[first.len()..].to_owned(), d))
        .collect()
}

/// Packs files as a `.tar.gz`, reproducibly: sorted, mode 0644, time 0,
/// no owner.
pub fn pack_tar_gz(files: &Files) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, data.as_slice())
            .expect("writing to memory");
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_then_unpack_gives_the_same_files() {
        let mut files = Files::new();
        files.insert("package.toml".into(), b"name = 'x'".to_vec());
        files.insert("jobs/a.toml.j2".into(), "é".as_bytes().to_vec());
        let bytes = pack_tar_gz(&files);
        assert_eq!(unpack_tar_gz(&bytes).unwrap(), files);
        assert_eq!(pack_tar_gz(&files), bytes, "reproducible");
    }

    #[test]
    fn a_top_directory_is_stripped() {
        let mut files = Files::new();
        files.insert("redis/package.toml".into(), b"x".to_vec());
        files.insert("redis/jobs/a.toml.j2".into(), b"y".to_vec());
        let out = unpack_tar_gz(&pack_tar_gz(&files)).unwrap();
        assert!(out.contains_key("package.toml") && out.contains_key("jobs/a.toml.j2"));
    }

    #[test]
    fn garbage_and_escaping_paths_are_refused() {
        assert!(unpack_tar_gz(b"not gzip").is_err());
        assert!(check_path("../etc/passwd").is_err());
        assert!(check_path("/etc/passwd").is_err());
        assert!(check_path("a//b").is_err());
        assert!(check_path("jobs/a.toml.j2").is_ok());
    }
}
