//! The built-in library: packages compiled into the binary, so that it
//! works offline. Each is `package/library/<name>/`.

use include_dir::{Dir, include_dir};

use crate::{Files, Package, PackageError};

static LIBRARY: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/library");

/// Names of the built-in packages, sorted.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&str> = LIBRARY
        .dirs()
        .filter_map(|d| d.path().file_name()?.to_str())
        .collect();
    names.sort_unstable();
    names
}

/// The files of a built-in package.
pub fn files(name: &str) -> Option<Files> {
    let dir = LIBRARY.get_dir(name)?;
    let mut files = Files::new();
    collect(dir, dir.path(), &mut files);
    Some(files)
}

fn collect(dir: &Dir<'static>, root: &std::path::Path, out: &mut Files) {
    for f in dir.files() {
        if let Ok(rel) = f.path().strip_prefix(root) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            out.insert(rel, f.contents().to_vec());
        }
    }
    for d in dir.dirs() {
        collect(d, root, out);
    }
}

/// Loads a built-in package; `None` when there is none by that name.
pub fn get(name: &str) -> Option<Result<Package, PackageError>> {
    files(name).map(Package::from_files)
}

/// Every built-in package, loaded.
pub fn all() -> Vec<(&'static str, Result<Package, PackageError>)> {
    names()
        .into_iter()
        .map(|n| (n, Package::from_files(files(n).unwrap_or_default())))
        .collect()
}
