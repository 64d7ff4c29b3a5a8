//! The modes of what `ao` makes under `AO_HOME`. The home holds the store
//! (with agents' `env:` secrets), prompts and terminal logs, so every
//! directory ao makes there is owner-only, and so is every file, on its
//! own: neither depends on the mode of the home or on the process umask.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Directories ao makes: the owner may list, enter and write them.
pub const DIR_MODE: u32 = 0o700;
/// Files ao makes: the owner may read and write them.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each new one [`DIR_MODE`];
/// directories that exist keep their mode.
///
/// # Errors
/// As [`DirBuilder::create`].
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Options that create a missing file as [`FILE_MODE`].
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Writes `data` to `path`, replacing what was there; a new file is
/// [`FILE_MODE`].
///
/// # Errors
/// As [`OpenOptions::open`] and [`Write::write_all`].
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?
        .write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn what_ao_makes_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        create_private_dir(&deep).unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&deep), 0o700);
        let file = deep.join("f");
        write_private(&file, b"x").unwrap();
        assert_eq!(mode(&file), 0o600);
        write_private(&file, b"y").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"y");
    }
}
