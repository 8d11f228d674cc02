// include_dir! cannot tell cargo which files it read: rebuild when the
// built-in library changes.
fn main() {
    println!("cargo:rerun-if-changed=library");
}
